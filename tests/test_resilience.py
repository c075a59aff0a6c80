"""Fault storms and Slack rate limits (SPEC §8): no post lost or doubled, nothing half-applied."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import select

from bot.models import OutgoingMessage
from bot.reply import Reply
from bot.outbox import enqueue
from tests.support.harness import ADMIN, APPROVER, RESPONDER, Bot, flatten, make_settings


async def wait_until(predicate, timeout=30.0, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(step)
    return False


async def queue_posts(bot, channel: str, count: int, label: str) -> None:
    """Posts queued the way every command queues them (outbox rows), from another connection."""
    async with bot.db() as db, db.transaction() as s:
        for i in range(count):
            await enqueue(s, channel=channel, reply=Reply(f"{label} {i:02d}", private=False),
                          at=bot.runtime.services.clock.now())


async def test_a_burst_to_one_channel_lands_complete_in_order_without_429s(tmp_path, db_url, fake_slack):
    fake_slack.channel_rate = 0.2  # this Slack refuses a second post to a channel within 200 ms
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, revops_post_interval="0.25s")
    bot = Bot(settings, fake_slack).start()
    try:
        await queue_posts(bot, "C0BURST", 30, "burst")
        assert await wait_until(lambda: _count(fake_slack, "C0BURST", 30), timeout=40)
        await bot.drain()
        texts = [p["text"] for p in fake_slack.posted("C0BURST")]
        assert texts == [f"burst {i:02d}" for i in range(30)]  # complete, once each, in order
        assert fake_slack.attempts("chat.postMessage") == 30  # no 429 ever happened
    finally:
        bot.stop()


async def _count(fake_slack, channel, n):
    return len(fake_slack.posted(channel)) >= n


async def test_a_slack_storm_of_429s_and_500s_loses_and_doubles_nothing(bot, fake_slack):
    fake_slack.fail("chat.postMessage", status=429, retry_after=1, times=4)
    fake_slack.fail("chat.postMessage", status=500, times=6)
    for i in range(4):
        bot.slash_text("dryrun on" if i % 2 == 0 else "dryrun off", user=ADMIN)

    async def all_sent():
        async with bot.db() as db, db.transaction() as s:
            rows = (await s.execute(select(OutgoingMessage.status))).scalars().all()
        return len(rows) == 4 and set(rows) == {"sent"}

    assert await wait_until(all_sent, timeout=60)
    texts = [p["text"].replace("*", "") for p in fake_slack.posted("C0INCIDENT")]
    assert len(texts) == 4  # none lost, none doubled
    assert [("turned on" in t) for t in texts] == [True, False, True, False]  # in order
    assert fake_slack.attempts("chat.postMessage") > 4  # the storm really happened


async def test_posts_queued_while_the_bot_is_down_are_delivered_after_a_restart(tmp_path, db_url, fake_slack):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url)
    bot = Bot(settings, fake_slack).start()
    fake_slack.fail("chat.postMessage", status=503, times=1000)  # Slack is down
    bot.slash_text("grant nobody 5 x", user=RESPONDER)  # bad input posts nothing
    bot.slash_text("dryrun on", user=ADMIN)  # an announcement that cannot be delivered yet
    bot.stop()
    fake_slack.reset()  # Slack is back
    bot = Bot(settings, fake_slack).start()
    try:
        assert await wait_until(lambda: _count(fake_slack, "C0INCIDENT", 1), timeout=30)
        await bot.drain()
        [post] = fake_slack.posted("C0INCIDENT")
        assert "Dry-run turned on" in post["text"].replace("*", "")
        async with bot.db() as db, db.transaction() as s:  # and nothing else is waiting for a later attempt
            assert (await s.execute(select(OutgoingMessage.status))).scalars().all() == ["sent"]
    finally:
        bot.stop()


async def test_a_pending_approval_survives_a_restart(tmp_path, db_url, fake_slack):
    from bot.billing import ledger

    settings = make_settings(tmp_path, db_url, fake_slack.api_url)
    bot = Bot(settings, fake_slack).start()
    async with bot.db() as db, db.transaction() as s:
        await ledger.ensure_account(s, "acct_r", email="r@example.com", at=bot.runtime.services.clock.now())
    assert "Request #1 posted for approval" in bot.slash_text("grant acct_r 30 restart test", user=RESPONDER)
    await bot.wait_posts(1)
    bot.stop()
    bot = Bot(settings, fake_slack).start()
    try:
        answer = bot.click_and_wait("revops:grants.approve", "1", user=APPROVER)
        assert "Approved request #1" in flatten(answer) and "New balance: 30" in flatten(answer)
        updates = fake_slack.wait_for("chat.update", 1)
        assert "approved by <@U0APPROVER>" in flatten(updates[0].params)
    finally:
        bot.stop()


async def test_commands_answer_database_unavailable_when_postgres_is_gone(tmp_path, pg_server, fake_slack, request):
    """PostgreSQL only: SQLite is a file the process holds open, it does not go away."""
    db_url = await pg_server.create_database()
    settings = make_settings(tmp_path, db_url, fake_slack.api_url)
    bot = Bot(settings, fake_slack).start()
    try:
        assert "Dry-run is off" in bot.slash_text("dryrun status", user=ADMIN)
        name = db_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(pg_server.admin_url)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
        started = time.time()
        answer = bot.slash_text("dryrun on", user=ADMIN)
        assert "the database is unavailable; nothing was changed" in answer
        assert time.time() - started < 3  # inside Slack's acknowledgement window
        assert bot.http.get("/readyz").status_code == 503
    finally:
        bot.stop()
