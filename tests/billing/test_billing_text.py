"""Issue 15 items 1 and 2 for billing: Stripe's text (a customer's name, email, description) is
data — arriving by a signed webhook in today's shape and shown by `customer …` / `credits …`, its
markup shows as typed and pings nobody — and long lists (invoices, a bulk replay) stay within
Slack's limits with "N of M" and where to see more, their footers kept."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from bot.billing.reconcile import ReconcileReport
from bot.billing.views import reconcile_reply
from bot.slack.blocks import MAX_BLOCKS, MAX_CHARS, fallback_text, message_size, render_blocks
from tests.support.harness import APPROVER, VIEWER, flatten

from . import shapes
from .shapes import NOW, event

HOSTILE = "<!channel> <https://evil.example|x> <@U123> <#C1> <!here> <!everyone> <!subteam^S1> &amp;"
ESCAPED = ["&lt;!channel&gt;", "&lt;https://evil.example|x&gt;", "&lt;@U123&gt;", "&lt;#C1&gt;", "&lt;!here&gt;",
           "&lt;!everyone&gt;", "&lt;!subteam^S1&gt;", "&amp;amp;"]
RAW = ["<!channel>", "<https://evil.example", "<@U123>", "<#C1>", "<!here>", "<!everyone>", "<!subteam^S1>"]
EMAIL = "<!channel>ada@evil.example"


def assert_escaped(payload: dict, expected=ESCAPED) -> str:
    text, raw = flatten(payload), json.dumps(payload, ensure_ascii=False)
    for escaped in expected:
        assert escaped in text, (escaped, text[:3000])
    for token in RAW:
        assert token not in raw, token
    return text


def assert_fits(payload: dict) -> None:
    blocks = payload["blocks"]
    assert len(blocks) <= MAX_BLOCKS and message_size(blocks, payload.get("text", "")) <= MAX_CHARS


def _hostile_customer(cid: str) -> dict:
    return {**shapes.customer(cid, EMAIL, name=HOSTILE, user_id="acct_hostile"), "description": HOSTILE}


def test_a_customer_from_a_webhook_shows_its_name_and_email_as_typed(webhook_bot):
    cid = "cus_Hostile1"
    assert webhook_bot.post_event(event("customer.created", _hostile_customer(cid))).json()["status"] == "processed"
    answer = webhook_bot.ask(f"customer {cid}", user=VIEWER)[1]
    text = assert_escaped(answer, ESCAPED + ["&lt;!channel&gt;ada@evil.example"])
    assert f"Customer {cid} — &lt;!channel&gt; &lt;https://evil.example|x&gt;" in text  # the mirror's copy
    credits = webhook_bot.slash("credits acct_hostile", user=VIEWER).json()
    assert_escaped(credits, ["&lt;!channel&gt;ada@evil.example"])


def test_a_customer_from_stripe_shows_its_name_and_description_as_typed(stripe_bot):
    live = stripe_bot.stripe.api("POST", "customers", {"email": "ada@evil.example", "name": HOSTILE,
                                                       "description": HOSTILE})
    obj = {**shapes.customer(live["id"], "ada@evil.example", name=HOSTILE), "description": HOSTILE}
    assert stripe_bot.post_event(event("customer.created", obj)).json()["status"] == "processed"
    answer = stripe_bot.ask(f"customer {live['id']}", user=VIEWER)[1]
    text = assert_escaped(answer)
    assert "Stripe and the mirror agree" in text
    assert "Description\n&lt;!channel&gt; &lt;https://evil.example|x&gt;" in text  # Stripe's live copy


def test_forty_invoices_show_the_newest_ten_with_where_the_rest_are(webhook_bot):
    cid = "cus_Many1"
    webhook_bot.post_event(event("customer.created", shapes.customer(cid, "many@example.com", user_id="acct_many")))
    for n in range(40):
        invoice = {**shapes.invoice(f"in_Many{n:03d}", cid, None, status="open", attempts=1), "created": NOW - 86400 + n}
        assert webhook_bot.post_event(event("invoice.created", invoice)).json()["status"] == "processed"
    answer = webhook_bot.ask(f"customer {cid}", user=VIEWER)[1]
    assert_fits(answer)
    text = flatten(answer)
    assert "in_Many039" in text and "in_Many030" in text and "in_Many029" not in text
    assert "showing the newest 10 of 40 invoices — full list: " in text
    assert f"<https://dashboard.stripe.com/test/customers/{cid}|Stripe dashboard>" in text
    assert "revops:sync.customer" in text  # the buttons are kept


def test_a_bulk_replay_lists_the_newest_with_its_footer(webhook_bot):
    long_email = "x" * 200 + "@nowhere.example"
    for n in range(40):
        guest = shapes.checkout_session(f"cs_test_guest{n:03d}", email=f"{n:03d}{long_email}",
                                        metadata={"credits": "5"})
        guest["customer_details"]["name"] = HOSTILE
        posted = webhook_bot.post_event(event("checkout.session.completed", guest, NOW - 600 + n)).json()
        assert posted["status"] == "failed", posted
    assert "40 failed Stripe events" in webhook_bot.slash_text("replay failed", user=APPROVER)
    done = webhook_bot.bot.click_and_wait("revops:replay.failed_confirm", str(24 * 3600), user=APPROVER, timeout=30)
    assert_fits(done)
    text = flatten(done)
    assert "Replayed 40 failed events: 0 now applied, 40 still failing." in text
    assert "cs_test_guest039" in text and "cs_test_guest024" not in text  # the newest 15
    assert "Showing the newest 15 of 40 replayed events — what still fails: /revops replay failed" in text


def test_a_reconcile_report_with_long_lists_fits_and_keeps_its_lines():
    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    report = ReconcileReport(
        since=now - timedelta(days=30), until=now, days=30,
        stripe_active={f"sub_S{n:04d}" for n in range(300)}, local_active={f"sub_L{n:04d}" for n in range(300)},
        missed=[{"id": f"evt_M{n:04d}", "type": "invoice.paid"} for n in range(300)],
        stripe_per_day={f"2025-12-{d:02d}": 100 for d in range(1, 32)}, local_per_day={},
        newest_received=now - timedelta(days=3), now=now,
        notes=["a note " + HOSTILE + " " + "y" * 3000],
        uncredited=[(f"evt_U{n:04d}", "guest checkout: no account has the buyer's email " + HOSTILE + " " + "z" * 2000)
                    for n in range(50)])
    reply = reconcile_reply(report)
    blocks = render_blocks(reply)
    assert len(blocks) <= MAX_BLOCKS and message_size(blocks, fallback_text(reply)) <= MAX_CHARS
    text = flatten({"blocks": blocks})
    assert "and 290 more" in text and "Freshness: newest event received 3 days ago" in text
    assert "showing 10 of 50 — all of them: /revops replay failed" in text and "a note &lt;!channel&gt;" in text
    assert "Showing the" not in text  # bounded by the view: the renderer had nothing to cut
    assert not any(token in json.dumps(blocks) for token in RAW)
