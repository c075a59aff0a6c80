"""Issue 15 items 1 and 2 for the grants family, through signed Slack requests and the fake Slack:
a reason (and a reject reason) is data — whatever markup a person types shows as typed and pings
nobody, in the approval message, the requester's answer, the outcome and the DMs — and a long
pending list stays within Slack's limits with its "N of M" and the command that shows more."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from bot.billing import ledger
from bot.clock import FakeClock
from bot.grants.models import GrantRequest
from bot.slack.blocks import MAX_BLOCKS, MAX_CHARS, message_size
from tests.support.harness import APPROVER, CHANNEL, RESPONDER, VIEWER, Bot, flatten, make_settings

HOSTILE = "<!channel> <https://evil.example|x> <@U123> <#C1> <!here> <!everyone> <!subteam^S1> &amp;"
ESCAPED = ["&lt;!channel&gt;", "&lt;https://evil.example|x&gt;", "&lt;@U123&gt;", "&lt;#C1&gt;", "&lt;!here&gt;",
           "&lt;!everyone&gt;", "&lt;!subteam^S1&gt;", "&amp;amp;"]
RAW = ["<!channel>", "<https://evil.example", "<@U123>", "<#C1>", "<!here>", "<!everyone>", "<!subteam^S1>"]

CREDITS_TOML = """
[credits]
max_grant = 500
daily_cap = 100000
approval_ttl = "30m"
max_pending_per_requester = 100
"""


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def gbot(tmp_path, db_url, fake_slack, clock):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=CREDITS_TOML)
    running = Bot(settings, fake_slack, clock=clock).start()
    asyncio.run(_seed(running, clock))
    yield running
    running.stop()


async def _seed(bot, clock):
    async with bot.db() as db, db.transaction() as s:
        await ledger.ensure_account(s, "acct_1", email="ada@example.com", at=clock.now())
        await ledger.append_entry(s, account_id="acct_1", delta=100, kind="purchase", reason="seed pack",
                                  actor="stripe", idempotency_key="seed:acct_1", at=clock.now() - timedelta(days=2))


def assert_escaped(payload: dict, *, where: str) -> None:
    """Every hostile token shows as typed (escaped) and none is live, anywhere in the payload."""
    text, raw = flatten(payload), json.dumps(payload, ensure_ascii=False)
    for escaped in ESCAPED:
        assert escaped in text, (where, escaped, text[:2000])
    for token in RAW:
        assert token not in raw, (where, token)


def _buttons(call) -> dict:
    return {e["action_id"]: e for b in call.params.get("blocks", []) if b["type"] == "actions" for e in b["elements"]}


async def _ask(bot, text: str) -> tuple[int, dict, dict]:
    """A request through a signed slash command: (its number, the answer, the approval message)."""
    def is_approval(call):
        return call.params.get("channel") == CHANNEL and "revops:grants.approve" in _buttons(call)

    before = len([c for c in bot.slack.calls_of("chat.postMessage") if is_approval(c)])
    response = bot.slash(text, user=RESPONDER)
    assert response.status_code == 200
    answer = response.json()
    assert "posted for approval" in flatten(answer), flatten(answer)
    approval = (await bot.slack.wait("chat.postMessage", before + 1, where=is_approval))[before]
    return int(_buttons(approval)["revops:grants.approve"]["value"]), answer, approval.params


async def _dm(bot, count: int) -> list:
    calls = await bot.slack.wait("chat.postMessage", count, where=lambda c: c.params.get("channel") == RESPONDER)
    return [c.params for c in calls]


@pytest.mark.parametrize("command", ["grant acct_1 50", "credits adjust acct_1 +50"])
async def test_a_reason_is_data_everywhere_it_is_shown(gbot, command):
    # asked: the answer and the channel's approval message
    rid, answer, approval = await _ask(gbot, f"{command} {HOSTILE}")
    assert_escaped(answer, where="the requester's answer")
    assert_escaped(approval, where="the approval message")
    assert "<@U0RESPONDER>" in flatten(approval)  # the requester is still a real mention

    # approved: the message updated in place and the requester's DM
    approved = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    assert f"Approved request #{rid}" in flatten(approved)
    [update] = await gbot.slack.wait("chat.update", 1)
    assert_escaped(update.params, where="the approved outcome")
    [dm] = await _dm(gbot, 1)
    assert "was approved by <@U0APPROVER>" in flatten(dm)
    assert_escaped(dm, where="the approval DM")

    # rejected, with a reject reason holding the same
    rid2, _, _ = await _ask(gbot, f"{command} {HOSTILE}")
    rejected = gbot.slash_text(f"grant reject #{rid2} {HOSTILE}", user=APPROVER)
    assert f"Rejected request #{rid2}" in rejected
    updates = await gbot.slack.wait("chat.update", 2)
    outcome = flatten(updates[1].params)
    assert "rejected by <@U0APPROVER>" in outcome and outcome.count("&lt;!channel&gt;") >= 2  # reason, reject reason
    assert_escaped(updates[1].params, where="the rejected outcome")
    dms = await _dm(gbot, 2)
    assert "was rejected by <@U0APPROVER>. Reason: &lt;!channel&gt;" in flatten(dms[1])
    assert_escaped(dms[1], where="the reject DM")


async def test_a_long_reason_is_clipped_where_it_is_shown_and_kept_whole(gbot):
    reason = ("refund " * 160).strip()  # 1,119 characters: the whole of it is stored
    rid, answer, approval = await _ask(gbot, f"grant acct_1 5 {reason[:1000]}")
    async with gbot.db() as db, db.transaction() as s:
        assert (await s.get(GrantRequest, rid)).reason == reason[:1000]
    for payload in (answer, approval):
        [field] = [f["text"] for b in payload["blocks"] for f in b.get("fields", []) if "Reason" in f["text"]]
        assert field.endswith("…") and len(field) < 520


async def test_three_hundred_pending_requests_fit_one_message_with_their_footer(gbot, clock):
    async with gbot.db() as db, db.transaction() as s:
        for n in range(300):
            s.add(GrantRequest(kind="grant", account_id="acct_1", amount=1 + n % 400,
                               reason=f"request {n}: " + "x" * 980 + " <!channel>", requester=RESPONDER,
                               channel=CHANNEL, status="pending", dry_run=False, created_at=clock.now(),
                               expires_at=clock.now() + timedelta(minutes=30)))
    response = gbot.slash("grant pending", user=VIEWER)
    payload = response.json()
    blocks = payload["blocks"]
    assert len(blocks) <= MAX_BLOCKS and message_size(blocks, payload.get("text", "")) <= MAX_CHARS
    text = flatten(payload)
    assert "request 299:" in text and "request 279:" not in text  # the newest 20
    assert "Showing the newest 20 of 300 pending requests" in text
    assert "older ones: /revops grant pending --before 281" in text
    assert "<!channel>" not in json.dumps(payload) and "<@U0RESPONDER>" not in text  # a list pings nobody

    older = gbot.slash("grant pending --before 281", user=VIEWER).json()
    text = flatten(older)
    assert "request 279:" in text and "request 280:" not in text and "request 259:" not in text
    assert "Showing the newest 20 of 280 pending requests" in text
    assert len(older["blocks"]) <= MAX_BLOCKS and message_size(older["blocks"], older.get("text", "")) <= MAX_CHARS
