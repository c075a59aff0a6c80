"""The incident pages: a signed expiring link from the bot, or the admin key; 401/403 otherwise."""

from __future__ import annotations

import re
from datetime import timedelta

from tests.support.harness import ADMIN_KEY, RESPONDER, VIEWER

LINK = re.compile(r"http://revops\.test(/incidents/(\d+)\?exp=(\d+)&sig=([0-9a-f]{64}))")


def link_of(bot, ref: str = "") -> str:
    text = bot.slash_text(f"incident link {ref}".strip(), user=VIEWER)
    match = LINK.search(text)
    assert match, text
    return match.group(1)


def test_signed_link_opens_the_page_until_it_expires(ibot, clock):
    ibot.slash_text("incident declare P1 checkout <script>alert(1)</script> baseline=3.2% current=2.1% "
                    "traffic=1200 aov=80", user=RESPONDER)
    clock.advance(timedelta(minutes=5))
    ibot.slash_text("incident ack", user=RESPONDER)
    path = link_of(ibot)

    page = ibot.http.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Incident #1: checkout" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "acknowledged after 5m" in html  # clocks
    assert "$1,056.00" in html and "$25,344.00" in html  # impact
    assert "Acknowledged after 5m; incident commander" in html  # timeline
    assert "Post-incident report" in html and "Lessons learned" in html

    bare = path.split("?")[0]
    assert ibot.http.get(bare).status_code == 401  # no credentials
    assert ibot.http.get(bare, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert ibot.http.get(path[:-1] + ("0" if path[-1] != "0" else "1")).status_code == 403  # tampered
    exp = re.search(r"exp=(\d+)", path).group(1)
    assert ibot.http.get(path.replace(exp, str(int(exp) + 3600))).status_code == 403  # extended expiry
    ibot.slash_text("incident declare P2 search slow", user=RESPONDER, channel="C0OTHER")
    assert ibot.http.get(path.replace("/incidents/1?", "/incidents/2?")).status_code == 403  # another page
    admin = ibot.http.get("/incidents/2", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.status_code == 200 and "Incident #2: search" in admin.text
    assert ibot.http.get("/incidents/99", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 404

    listing = ibot.http.get("/incidents", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert listing.status_code == 200
    assert re.search(r'href="/incidents/1\?exp=\d+&amp;sig=[0-9a-f]{64}"', listing.text)
    assert ibot.http.get("/incidents").status_code == 401

    clock.advance(timedelta(days=7, minutes=1))
    assert ibot.http.get(path).status_code == 403  # expired
    assert ibot.http.get(link_of(ibot, "#1")).status_code == 200  # a fresh link works again


def test_report_posts_the_link(ibot):
    ibot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER)
    ibot.slash_text("incident resolve a stuck queue", user=RESPONDER)
    report = ibot.slash_text("incident report", user=VIEWER)
    match = LINK.search(report)
    assert match and ibot.http.get(match.group(1)).status_code == 200
