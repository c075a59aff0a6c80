"""The Slack surface end to end: signed requests through the real bolt verification."""

import asyncio
import time

import pytest
from sqlalchemy import func, select

from bot.models import AuditRecord
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from tests.support.harness import ADMIN, CHANNEL, RESPONDER, SIGNING_SECRET, VIEWER, flatten
from tests.support.slack_requests import slash_body


async def audit_count(bot) -> int:
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(func.count()).select_from(AuditRecord))).scalar()


def test_help_answers_in_the_acknowledgement(bot):
    text = bot.slash_text("help", user=VIEWER)
    assert "/revops dryrun" in text and "/revops audit" in text
    assert "You are viewer" in text


def test_help_for_one_command_names_its_role(bot):
    text = bot.slash_text("help audit", user=VIEWER)
    assert "audit [target]" in text and "approver" in text
    assert "dryrun" not in text


@pytest.mark.parametrize("how", ["unsigned", "wrong-secret", "ten-minutes-old", "tampered"])
async def test_bad_signatures_get_401_and_change_nothing(bot, fake_slack, how):
    body = slash_body("dryrun on", user=ADMIN, channel=CHANNEL, response_url=bot.response_url())
    if how == "unsigned":
        r = bot.http.post("/slack/events", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    elif how == "wrong-secret":
        r = bot.post_signed(body, secret="not-the-signing-secret")
    elif how == "ten-minutes-old":
        r = bot.post_signed(body, timestamp=int(time.time()) - 600)
    else:
        from tests.support.slack_requests import sign

        headers = sign(SIGNING_SECRET, body)
        r = bot.http.post("/slack/events", content=body.replace("dryrun+on", "panic+on"), headers=headers)
    assert r.status_code == 401
    assert await audit_count(bot) == 0
    assert "Dry-run is off" in bot.slash_text("dryrun status")
    await bot.drain()
    assert fake_slack.calls_of("chat.postMessage") == []


def test_unknown_sub_command_answers_privately_with_usage(bot):
    r = bot.slash("frobnicate now", user=RESPONDER)
    payload = r.json()
    assert payload["response_type"] == "ephemeral"
    text = flatten(payload)
    assert "unknown command frobnicate" in text and "Usage: /revops help" in text


def test_malformed_argument_names_what_was_wrong(bot):
    text = bot.slash_text("dryrun maybe", user=ADMIN)
    assert "expected one of on, off, status" in text
    assert "Usage: /revops dryrun [on|off|status]" in text
    text = bot.slash_text("audit --since soon", user=ADMIN)
    assert "--since must be a duration" in text and "Usage: /revops audit" in text
    text = bot.slash_text('audit "unbalanced', user=ADMIN)
    assert "unbalanced quotes" in text


def test_slow_command_is_acknowledged_then_answered(bot):
    slow = CommandSet("slowtest")

    @slow.command("slowtest", summary="sleeps", role=Role.viewer, slow=True)
    async def sleeper(ctx, args):
        await asyncio.sleep(0.3)
        return Reply("slept well", private=False)

    bot.runtime.services.registry.add(slow)
    url = bot.response_url()
    r = bot.slash("slowtest", user=VIEWER, response_url=url)
    assert r.status_code == 200 and "Working on it" in flatten(r.json())
    answer = bot.wait_response(url)
    assert "slept well" in flatten(answer)
    assert answer["response_type"] == "in_channel"


async def test_retried_event_delivery_runs_once(bot, fake_slack):
    event = {"type": "app_mention", "user": ADMIN, "text": "<@U0BOT> dryrun on", "ts": "1700000001.000100",
             "channel": CHANNEL, "event_ts": "1700000001.000100"}
    assert bot.event(event, event_id="Ev0DUPLICATE").status_code == 200
    assert bot.event(event, event_id="Ev0DUPLICATE", retry_num=1).status_code == 200
    assert bot.event(event, event_id="Ev0DUPLICATE", retry_num=2).status_code == 200
    await bot.drain()
    async with bot.db() as db, db.transaction() as s:
        toggles = (await s.execute(select(AuditRecord).where(AuditRecord.command == "dryrun"))).scalars().all()
    assert len(toggles) == 1
    answers = [c for c in fake_slack.calls_of("chat.postMessage") if c.params.get("thread_ts")]
    assert len(answers) == 1 and "Dry-run is now on" in answers[0].params["text"].replace("*", "")


async def test_web_api_429_is_retried_after_retry_after(bot, fake_slack):
    fake_slack.fail("chat.postMessage", status=429, retry_after=1, times=1)
    started = time.time()
    assert "Dry-run is now on" in bot.slash_text("dryrun on", user=ADMIN)
    posts = await bot.wait_posts(2)  # one 429, then the retry
    await bot.drain()
    assert fake_slack.attempts("chat.postMessage") == 2  # no third attempt: delivered once
    delivered = [c for c in fake_slack.calls_of("chat.postMessage")]
    assert all(c.params["channel"] == "C0INCIDENT" for c in delivered)
    assert posts[1].at - posts[0].at >= 0.9  # waited for Retry-After
    assert "turned on" in posts[-1].params["text"].replace("*", "")
