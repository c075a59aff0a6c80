"""Issue 15 items 1, 2 and 8 for incidents: user and alert text never becomes a ping or a disguised
link in what the bot sends; every message of a long incident fits Slack (≤ 50 blocks, ≤ 12,000
characters) and is cut only between tokens, keeping its newest entries, its report's lessons,
action items and page link; the page shows everything whole, people by name.
Through signed requests and the fake Slack, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

from bot.incidents import service
from bot.render_text import render_text
from bot.router import Router
from bot.scheduler import run_due
from bot.slack.blocks import MAX_BLOCKS, MAX_CHARS, message_size
from tests.incidents.conftest import outbox
from tests.support.harness import ADMIN_KEY, ALERTS_TOKEN, CHANNEL, RESPONDER, VIEWER, flatten, mrkdwn_texts

HOSTILE = ["<!channel>", "<!here>", "<!everyone>", "<!subteam^S1>", "<@U123>", "<#C1>",
           "<https://evil.example|x>", "&amp;"]
LURE = "<!channel> <https://evil.example/login|Click to re-auth>"
ALL = " ".join(HOSTILE)
# The tokens the bot itself may make here: mentions of the people in the test, links to its own pages.
OWN_TOKEN = re.compile(r"<@U0[A-Z0-9]+>|<#C0[A-Z0-9]+>|<http://revops\.test/incidents[^|>]*\|[^<>]*>")


def escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def sent_text(payloads) -> str:
    """Every text of the payloads Slack reads as mrkdwn, as Slack receives them (no un-escaping,
    markup kept); plain_text objects (button labels, confirm dialogs) are shown as is, never read."""
    return "\n".join(mrkdwn_texts(list(payloads)))


def assert_harmless(text: str) -> None:
    for hostile in HOSTILE:
        assert escaped(hostile) in text, hostile
    for raw in ("<!channel>", "<!here>", "<!everyone>", "<!subteam^S1>", "<@U123>", "<#C1>", "<https://evil.example"):
        assert raw not in text, raw
    assert "&lt;!channel&gt;" in text
    stray = [t for t in re.findall(r"<[^>]*>", text) if not OWN_TOKEN.fullmatch(t)]
    assert stray == [], stray


def slack_payloads(fake_slack) -> list[dict]:
    return [c.params for c in fake_slack.calls_of("chat.postMessage") + fake_slack.calls_of("chat.update")
            + fake_slack.responses_list()]


async def test_user_text_in_incident_posts_pings_nobody(ibot, fake_slack, services):
    acks = [ibot.slash(f"incident declare P1 checkout {LURE} {ALL}", user=RESPONDER)]
    acks.append(ibot.slash("incident ack", user=RESPONDER))
    acks.append(ibot.slash(f"incident update rolled back {LURE} {ALL}", user=RESPONDER))
    acks.append(ibot.slash(f"incident note {LURE} {ALL}", user=RESPONDER))
    acks.append(ibot.slash(f"incident note lesson: {ALL}", user=RESPONDER))
    acks.append(ibot.slash(f"incident action {ALL}", user=RESPONDER))
    acks.append(ibot.slash(f"incident mitigated {ALL}", user=RESPONDER))
    acks.append(ibot.slash(f"incident resolve {LURE} {ALL}", user=RESPONDER))
    for read in ("incident status", "incident timeline", "incident report", "incident list"):
        acks.append(ibot.slash(read, user=VIEWER))
    assert all(a.status_code == 200 for a in acks)
    await ibot.drain()
    answers = [a.json() for a in acks if a.content]

    posts = fake_slack.calls_of("chat.postMessage")
    initial = sent_text(p.params for p in posts if "Incident #1: checkout" in p.params.get("text", "")
                        and "[P1]" in p.params.get("text", ""))
    assert_harmless(initial)
    update = sent_text(p.params for p in posts if "Update on incident #1" in flatten(p.params))
    assert "rolled back" in update
    assert_harmless(update)
    resolved = sent_text(p.params for p in posts if "resolved" in flatten(p.params) and "Root cause" in flatten(p.params))
    assert_harmless(resolved)
    mitigated = sent_text(p.params for p in posts if "mitigated by" in flatten(p.params))
    assert_harmless(mitigated)
    everything = sent_text(answers + slack_payloads(fake_slack))
    assert_harmless(everything)
    timeline = sent_text([answers[-3]])  # incident timeline: the note, the update, the root cause
    assert "Note: " in timeline and "Root cause: " in timeline
    assert_harmless(timeline)
    report = sent_text(answers[-2:-1] + [p.params for p in posts if "Post-incident report" in flatten(p.params)])
    assert "Lessons learned" in report
    assert_harmless(report)

    # stored text is plain data: what was typed, no token made by the bot
    async with services.db.transaction() as s:
        entries = await service.timeline_of(s, 1)
    assert not any("<@U0" in e.text for e in entries)
    assert any(ALL in e.text for e in entries if e.kind == "note")

    # the console shows the characters as typed
    router = Router(services)
    for command in ("incident status #1", "incident timeline #1", "incident report #1"):
        outcome = await router.handle_text(command, actor=VIEWER, channel=CHANNEL, surface="console")
        console = render_text(outcome.reply)
        assert ALL in console, command
        assert "&lt;" not in console and "&amp;amp;" not in console


async def test_alert_stage_and_metric_are_data_in_the_alerts_channel(ibot, fake_slack):
    body = {"stage": f"checkout {ALL}"[:100], "metric": f"conv {LURE}", "baseline_mean": 0.032,
            "baseline_std": 0.002, "current": 0.021, "traffic_per_hour": 1200, "aov": 80}
    assert len(body["stage"]) <= 100 and "&amp;" in body["stage"]
    response = ibot.http.post("/alerts", json=body, headers={"Authorization": f"Bearer {ALERTS_TOKEN}"})
    assert response.status_code == 202, response.text
    await ibot.drain()
    cards = [c.params for c in fake_slack.calls_of("chat.postMessage") if c.params.get("channel") == "C0ALERTS"]
    assert cards
    text = sent_text(cards)
    for hostile in HOSTILE:
        assert escaped(hostile) in text, hostile
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text and "<https://evil" not in text
    assert re.findall(r"<[^>]*>", text) == []
    # the button's confirm question is plain_text: shown as is, never read as tokens
    confirms = [e["confirm"]["text"] for b in cards[0]["blocks"] if b["type"] == "actions" for e in b["elements"]
                if "confirm" in e]
    assert confirms and all(c["type"] == "plain_text" for c in confirms)


# --- limits --------------------------------------------------------------------------------------------

def words(n: int, tag: str) -> str:
    """About `n` characters of ordinary prose, every word distinct enough to find."""
    out, i = [], 0
    while sum(len(w) + 1 for w in out) < n:
        out.append(f"{tag}{i}")
        i += 1
    return " ".join(out)[:n].rstrip()


_BROKEN_START = re.compile(r"^[a-z0-9_+-]*:|^[^<]*>")
_PARTIAL_EMOJI_END = re.compile(r":[a-z0-9_+-]+$")


def assert_within_limits(payload: dict) -> None:
    blocks = payload.get("blocks") or []
    assert len(blocks) <= MAX_BLOCKS
    assert message_size(blocks, payload.get("text", "")) <= MAX_CHARS, message_size(blocks, payload.get("text", ""))
    for block in blocks:
        texts = [block["text"]["text"]] if block.get("text") else []
        texts += [e["text"] for e in block.get("elements", []) if isinstance(e.get("text"), str)]
        texts += [f["text"] for f in block.get("fields", [])]
        for text in texts:
            assert len(text) <= 3000
            # never cut inside a <…> token or an :emoji: code
            assert text.count("<") == text.count(">"), text[-80:]
            assert re.fullmatch(r"[^<>]*(<[^<>]*>[^<>]*)*", text), text[-80:]
            assert not _PARTIAL_EMOJI_END.search(text) or re.search(r":[a-z0-9_+-]+:$", text), text[-40:]


async def test_a_long_incident_fits_slack_and_the_page_shows_it_whole(ibot, fake_slack, services, clock):
    ibot.slash_text("incident declare P1 checkout conversion down baseline=3.2% current=2.1% traffic=1200 aov=80",
                    user=RESPONDER)
    ibot.slash_text("incident ack", user=RESPONDER)
    start = clock.now()
    async with services.db.transaction() as s:  # 300 entries of 4,000-character notes (written as the router does)
        for i in range(300):
            text = f"n{i} <@U0EVIL> & :white_check_mark: " + words(3960, f"w{i}x")
            kind, line = ("note", "Lesson learned: " + text) if i % 50 == 7 else ("note", "Note: " + text)
            await service.write_entry(s, 1, at=start, kind=kind, actor=RESPONDER, text=line,
                                      data={"text": ("lesson: " + text) if i % 50 == 7 else text})
        for i in range(12):
            await service.write_entry(s, 1, at=start, kind="action", actor=RESPONDER, text=f"Action item: a{i} "
                                      + words(2000, f"act{i}y"), data={"text": f"a{i} " + words(2000, f"act{i}y")})
    clock.advance(timedelta(minutes=1))
    huge = "BEGIN " + words(40_000, "u") + " END"
    assert len(huge) >= 40_000
    # a command argument is at most 1,000 characters: a long update a person can post, then (as stored by an
    # older version, or another path into the timeline) a 40,000-character one as the latest
    update = ibot.slash("incident update " + words(900, "v") + " " + ALL, user=RESPONDER)
    assert update.status_code == 200 and "Update posted" in update.text, update.text[:300]
    clock.advance(timedelta(minutes=1))
    async with services.db.transaction() as s:
        await service.write_entry(s, 1, at=clock.now(), kind="update", actor=RESPONDER, text=f"Update: {huge}",
                                  data={"text": huge})
    clock.advance(timedelta(minutes=1))
    ibot.slash_text("incident note the newest entry", user=RESPONDER)
    await ibot.drain()

    timeline = ibot.slash("incident timeline", user=VIEWER).json()
    report = ibot.slash("incident report", user=VIEWER).json()
    status = ibot.slash("incident status", user=VIEWER).json()
    listing = ibot.slash("incident list", user=VIEWER).json()
    # the cadence posts repeat the latest (40,000-character) update
    for _ in range(3):
        clock.advance(timedelta(minutes=31))
        await run_due(services)
    await ibot.drain()
    cadence = [m for m in await outbox(services, CHANNEL) if "update" in str(m.reply.get("text"))]
    automated = [c.params for c in fake_slack.calls_of("chat.postMessage")
                 if "Revenue-team update" in c.params.get("text", "") or "Engineering update" in c.params.get("text", "")]
    assert len(automated) >= 2 and cadence
    for payload in [timeline, report, status, listing, *slack_payloads(fake_slack)]:
        assert_within_limits(payload)
    for payload in automated:
        assert message_size(payload["blocks"], payload["text"]) < 6_000  # well under: the update is clipped
        assert "BEGIN" in sent_text([payload]) and "…" in sent_text([payload])

    # the timeline keeps its newest entry and says how many of how many, with the page link
    tl = sent_text([timeline])
    assert "the newest entry" in tl
    assert re.search(r"Showing the newest \d+ of 317 entries — full list: "
                     r"<http://revops\.test/incidents/1\?exp=\d+&sig=[0-9a-f]{64}\|incident page>", tl), tl[-500:]
    assert "<@U0EVIL>" not in tl and "&lt;@U0EVIL&gt;" in tl

    # the report keeps lessons, action items and the page link
    rp = sent_text([report])
    assert "Lessons learned" in rp and "n7 " in rp and "Action items" in rp and "a0 " in rp
    assert "more on the page" in rp
    assert "Showing the first" not in rp  # bounded by the view: the renderer's cut (last guard) was not needed
    assert "newest 15 of 317 entries" in rp
    assert "|Full report and timeline>" in rp

    # the page shows everything whole (the 40,000-character update, every note)
    page = ibot.http.get("/incidents/1", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert page.status_code == 200
    assert huge in page.text
    assert all(f"n{i} &lt;@U0EVIL&gt; &amp; :white_check_mark: w{i}x0 " in page.text for i in (0, 150, 299))
    assert all(words(3960, f"w{i}x") in page.text for i in (0, 299))  # whole
    assert "a11 act11y0" in page.text


# --- names on the page --------------------------------------------------------------------------------------

async def test_the_page_shows_people_by_name(ibot, fake_slack):
    fake_slack.users["U0RESPONDER"] = "Ada Lovelace"
    ibot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER)
    ibot.slash_text("incident ack", user=RESPONDER)
    page = ibot.http.get("/incidents/1", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
    assert "@Ada Lovelace" in page and "@U0RESPONDER" not in page


async def test_without_a_names_service_the_page_shows_ids(ibot, fake_slack):
    fake_slack.users["U0RESPONDER"] = "Ada Lovelace"
    ibot.runtime.services.extras.pop("names", None)
    ibot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER)
    page = ibot.http.get("/incidents/1", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
    assert "@U0RESPONDER" in page and "Ada Lovelace" not in page
