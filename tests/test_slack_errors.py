"""Slack's errors classified (SPEC §10, issue 15 item 3): a permanent error fails the post at
once with Slack's reason, never holds back later posts to its channel, and its author is told
in words; the incident timeline and the audit log say so; a grant whose approval message could
not be posted stays decidable with `grant approve #N`. Retryable errors keep the order."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from bot.app import build_services
from bot.billing import ledger
from bot.clock import FakeClock
from bot.incidents.models import TimelineEntry
from bot.models import AuditRecord, OutgoingMessage
from bot.outbox import PAUSE, PERMANENT, RETRY, SendError, enqueue
from bot.reply import Reply
from bot.scheduler import run_due
from bot.slack.client import SlackSender
from tests.support.harness import ADMIN, APPROVER, APPROVER2, CHANNEL, RESPONDER, Bot, flatten, make_settings
from tests.support.net import free_port

CREDITS_TOML = """
[credits]
max_grant = 500
daily_cap = 1000
approval_ttl = "30m"
"""

PERMANENT_ERRORS = ["channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "msg_blocks_too_long",
             "invalid_blocks", "missing_scope", "message_not_found", "cant_update_message", "restricted_action",
             "no_text", "invalid_arguments", "channel_is_archived", "team_access_not_granted",
             "some_error_slack_adds_next_year"]


async def _rows(bot):
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(OutgoingMessage).order_by(OutgoingMessage.id))).scalars().all()


async def _until(bot, done, timeout=10.0):
    """The outbox rows once `done(rows)` holds (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not done(rows := await _rows(bot)):
        assert time.monotonic() < deadline, [(r.status, r.attempts, r.error) for r in rows]
        await asyncio.sleep(0.02)
    return rows


@pytest.mark.parametrize("error", PERMANENT_ERRORS)
async def test_a_permanent_error_fails_the_post_at_once_and_later_posts_go(bot, fake_slack, error):
    fake_slack.fail("chat.postMessage", status=200, error=error, times=1)
    async with bot.db() as db, db.transaction() as s:
        for i in range(3):
            await enqueue(s, channel="C0OTHER", reply=Reply(f"post {i}", private=False),
                          at=bot.runtime.services.clock.now())
    await bot.drain()
    rows = await _rows(bot)
    assert [r.status for r in rows] == ["failed", "sent", "sent"]
    assert rows[0].attempts == 1 and rows[0].error == f"Slack said {error}"
    assert [p["text"] for p in fake_slack.posted("C0OTHER")] == ["post 1", "post 2"]
    assert fake_slack.attempts("chat.postMessage") == 3  # the refused one was tried once


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def cbot(tmp_path, db_url, fake_slack, clock):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=CREDITS_TOML)
    running = Bot(settings, fake_slack, clock=clock).start()
    asyncio.run(seed(running, clock))
    yield running
    running.stop()


async def seed(bot, clock):
    async with bot.db() as db, db.transaction() as s:
        await ledger.ensure_account(s, "acct_1", email="ada@example.com", at=clock.now())
        await ledger.append_entry(s, account_id="acct_1", delta=100, kind="purchase", reason="seed pack",
                                  actor="stripe", idempotency_key="seed:acct_1", at=clock.now() - timedelta(days=2))


@pytest.mark.parametrize("error", ["ratelimited", "service_unavailable", "fatal_error", "request_timeout",
                                   "internal_error", "HTTP 503"])
async def test_a_retryable_error_is_retried_in_order(cbot, fake_slack, clock, error):
    if error.startswith("HTTP"):
        fake_slack.fail("chat.postMessage", status=503, times=3)  # the client's own two retries, then the outbox's
    else:
        fake_slack.fail("chat.postMessage", status=200, error=error, times=1)
    async with cbot.db() as db, db.transaction() as s:
        for i in range(2):
            await enqueue(s, channel="C0OTHER", reply=Reply(f"post {i}", private=False), at=clock.now())
    # The first is refused and backs off (on the bot's clock, which stands still); the second waits behind it.
    rows = await _until(cbot, lambda rows: rows[0].attempts == 1)
    assert [r.status for r in rows] == ["pending", "pending"] and rows[1].attempts == 0
    assert fake_slack.posted("C0OTHER") == []
    clock.advance(5)
    await cbot.drain()
    assert [p["text"] for p in fake_slack.posted("C0OTHER")] == ["post 0", "post 1"]
    assert [r.status for r in await _rows(cbot)] == ["sent", "sent"]


def _to(channel):
    return lambda call: call.params.get("channel") == channel


async def test_the_author_is_told_in_the_channel_they_used_and_the_timeline_and_audit_say_so(cbot, fake_slack):
    assert "declared" in cbot.slash_text("incident declare P2 checkout conversion down", user=RESPONDER)
    await cbot.drain()
    fake_slack.refuse(CHANNEL, "not_in_channel")  # the bot was removed from the incident channel
    # Turning dry-run on from another channel announces it in the incident channel.
    assert "Dry-run is now on" in cbot.slash_text("dryrun on", user=ADMIN, channel="C0OPS")
    notice = (await fake_slack.wait("chat.postEphemeral", where=_to("C0OPS")))[0].params
    assert notice["user"] == ADMIN
    words = flatten(notice)
    assert f"Your post to #{CHANNEL} could not be delivered: Slack said not_in_channel" in words
    assert "/invite @revops" in words
    await cbot.drain()
    rows = await _rows(cbot)
    failed = [r for r in rows if r.status == "failed"]
    assert len(failed) == 1 and failed[0].channel == CHANNEL
    assert (failed[0].author, failed[0].origin_channel) == (ADMIN, "C0OPS")
    async with cbot.db() as db, db.transaction() as s:
        audits = (await s.execute(select(AuditRecord).where(AuditRecord.command == "slack.delivery"))).scalars().all()
        entries = (await s.execute(select(TimelineEntry).where(TimelineEntry.kind == "delivery"))).scalars().all()
    assert len(audits) == 1 and audits[0].outcome == "failed" and audits[0].actor == ADMIN
    assert "not_in_channel" in audits[0].detail and audits[0].args["channel"] == CHANNEL
    assert len(entries) == 1 and "not_in_channel" in entries[0].text and entries[0].actor == ADMIN
    # The next post to that channel is not held back: the bot back in, it goes at once.
    fake_slack.reset()
    assert "Dry-run is now off" in cbot.slash_text("dryrun off", user=ADMIN, channel="C0OPS")
    await fake_slack.wait("chat.postMessage", where=_to(CHANNEL))


async def test_a_grant_whose_approval_message_was_refused_tells_the_requester_and_stays_decidable(
        cbot, fake_slack):
    fake_slack.refuse("C0ARCHIVED", "is_archived")
    answer = cbot.slash_text("grant acct_1 20 goodwill", user=RESPONDER, channel="C0ARCHIVED")
    assert "Request #1 posted for approval" in answer
    # The channel they asked in refuses the bot: the requester hears it as a DM.
    dm = (await fake_slack.wait("chat.postMessage", where=_to(RESPONDER)))[0].params
    words = flatten(dm)
    assert "Your post to #C0ARCHIVED could not be delivered: Slack said is_archived" in words
    assert "Request #1 is still pending" in words and "/revops grant approve #1" in words
    # An approver decides it without the buttons; the update of the never-posted message fails
    # quietly (the requester was told), the requester hears the outcome and nothing is held back.
    text = cbot.slash_text("grant approve #1", user=APPROVER)
    assert "Approved request #1" in text and "New balance: 120 credits" in text
    await cbot.drain()
    dms = await fake_slack.wait("chat.postMessage", 2, where=_to(RESPONDER))
    assert "was approved by" in flatten(dms[-1].params)
    rows = await _rows(cbot)
    assert all(r.status != "pending" for r in rows)
    updates = [r for r in rows if r.kind == "update"]
    assert len(updates) == 1 and updates[0].status == "failed" and "never posted" in updates[0].error
    assert fake_slack.attempts("chat.update") == 0
    # a second approve says who decided
    assert "already approved" in cbot.slash_text("grant approve #1", user=APPROVER2)


async def test_the_network_failing_is_retryable_and_an_unknown_error_permanent(fake_slack):
    # Through the real client: a closed port (after the client's own retries), then the fake's answers.
    closed = SlackSender(AsyncWebClient(token="xoxb-x", base_url=f"http://127.0.0.1:{free_port()}/api/", timeout=2))
    with pytest.raises(SendError) as caught:
        await closed.post("C1", Reply("x", private=False), None)
    assert caught.value.action == RETRY and "unreachable" in str(caught.value)
    sender = SlackSender(AsyncWebClient(token="xoxb-x", base_url=fake_slack.api_url))
    for error, action in [("a_brand_new_error", PERMANENT), ("not_in_channel", PERMANENT),
                          ("service_unavailable", RETRY), ("token_revoked", PAUSE), ("invalid_auth", PAUSE)]:
        fake_slack.fail("chat.postMessage", status=200, error=error)
        with pytest.raises(SendError) as caught:
            await sender.post("C1", Reply("x", private=False), None)
        assert (caught.value.action, caught.value.code, str(caught.value)) == (action, error, f"Slack said {error}")


async def test_an_automated_post_refused_for_good_tells_the_incidents_commander_by_dm(tmp_path, db_url, fake_slack):
    """Nobody typed a cadence update: when Slack refuses it for good, the incident's commander
    hears it by DM (issue 15 item 3); the audit record names the bot, not the commander."""
    clock = FakeClock()
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml="""
[severity.P1]
ack = "15m"
resolve = "1h"
revenue_update = "30s"
""")
    running = Bot(settings, fake_slack, clock=clock).start()
    services = build_services(settings, clock)
    try:
        assert "declared" in running.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
        assert "incident commander" in running.slash_text("incident ack", user=APPROVER)
        await running.drain()
        fake_slack.refuse(CHANNEL, "is_archived")
        clock.advance(timedelta(seconds=31))
        assert "incident:1:revenue_update" in await run_due(services)
        await running.drain()
        refused = f"The automated post to #{CHANNEL} could not be delivered: Slack said is_archived"
        # the commander's DMs: the checklist of the ack, then the notice
        dms = await fake_slack.wait("chat.postMessage", where=lambda c: _to(APPROVER)(c) and refused in flatten(c.params))
        assert dms  # one per refused post (the waiting above fails when none comes)
        async with running.db() as db, db.transaction() as s:
            audit = (await s.execute(select(AuditRecord).where(AuditRecord.command == "slack.delivery"))).scalars().all()
        assert audit and {a.actor for a in audit} == {"revops"}
    finally:
        await services.db.dispose()
        running.stop()
