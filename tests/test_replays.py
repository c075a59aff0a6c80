"""A signed Slack request replayed inside the signature window runs once (SPEC §10, issue 15
item 5), on whichever replica the copy lands: the router takes its delivery keys (signature +
timestamp, trigger_id) in the process, and claims them in the database before an action that
changes things runs, or with the records a read leaves."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.billing import ledger
from bot.billing.models import LedgerEntry
from bot.grants.models import GrantRequest
from bot.incidents.models import TimelineEntry
from bot.models import SlackRequestClaim
from tests.support.harness import (APPROVER, CHANNEL, RESPONDER, SIGNING_SECRET, Bot, flatten, make_settings)
from tests.support.slack_requests import block_actions_body, sign, slash_body


async def seed(bot):
    async with bot.db() as db, db.transaction() as s:
        now = bot.runtime.services.clock.now()
        await ledger.ensure_account(s, "acct_1", email="ada@example.com", at=now)
        await ledger.append_entry(s, account_id="acct_1", delta=100, kind="purchase", reason="seed pack",
                                  actor="stripe", idempotency_key="seed:acct_1", at=now - timedelta(days=2))


def captured(bot, body: str) -> tuple[str, dict[str, str]]:
    """One signed request, as an eavesdropper keeps it: the same bytes and headers each time."""
    return body, sign(SIGNING_SECRET, body)


def replay(bot, request) -> str:
    body, headers = request
    response = bot.http.post("/slack/events", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return flatten(response.json()) if response.content else ""


async def count(bot, model) -> int:
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def test_the_same_signed_grant_sent_five_times_makes_one_request(bot):
    await seed(bot)
    request = captured(bot, slash_body("grant acct_1 20 goodwill", user=RESPONDER, channel=CHANNEL,
                                       response_url=bot.response_url()))
    answers = [replay(bot, request) for _ in range(5)]
    assert "Request #1 posted for approval" in answers[0]
    assert all("Already received" in a and "not run again" in a for a in answers[1:]), answers
    await bot.drain()
    assert await count(bot, GrantRequest) == 1
    approvals = [c for c in bot.slack.calls_of("chat.postMessage") if "revops:grants.approve" in str(c.params)]
    assert len(approvals) == 1


async def test_an_incident_update_sent_four_times_makes_one_post(bot, fake_slack):
    assert "declared" in bot.slash_text("incident declare P2 checkout conversion down", user=RESPONDER)
    await bot.drain()
    before = len(fake_slack.posted(CHANNEL))
    request = captured(bot, slash_body("incident update rolled back the deploy", user=RESPONDER, channel=CHANNEL,
                                       response_url=bot.response_url()))
    answers = [replay(bot, request) for _ in range(4)]
    assert sum("Already received" in a for a in answers) == 3
    await bot.drain()
    posted = fake_slack.posted(CHANNEL)[before:]
    assert len([p for p in posted if "rolled back the deploy" in flatten(p)]) == 1
    async with bot.db() as db, db.transaction() as s:
        updates = (await s.execute(select(TimelineEntry).where(TimelineEntry.kind == "update"))).scalars().all()
    assert len(updates) == 1


async def test_a_replayed_click_changes_nothing(bot, fake_slack):
    await seed(bot)
    assert "posted for approval" in bot.slash_text("grant acct_1 20 goodwill", user=RESPONDER)
    url = bot.response_url()
    request = captured(bot, block_actions_body("revops:grants.approve", "1", user=APPROVER, channel=CHANNEL,
                                               response_url=url))
    for _ in range(3):
        replay(bot, request)
    await bot.drain()
    answers = [flatten(c.params) for c in fake_slack.responses_list() if c.key == url.rsplit("/", 1)[-1]]
    assert len(answers) == 3  # (the clicks' answers follow the acknowledgement, in any order)
    assert sum("Approved request #1" in a for a in answers) == 1
    assert sum("Already received" in a for a in answers) == 2, answers
    async with bot.db() as db, db.transaction() as s:
        grants = (await s.execute(select(LedgerEntry).where(LedgerEntry.kind == "grant"))).scalars().all()
    assert len(grants) == 1


async def test_the_same_trigger_id_signed_again_runs_once(bot):
    await seed(bot)
    body = slash_body("grant acct_1 20 goodwill", user=RESPONDER, channel=CHANNEL, response_url=bot.response_url())
    first = bot.http.post("/slack/events", content=body, headers=sign(SIGNING_SECRET, body, int(time.time()) - 10))
    again = bot.http.post("/slack/events", content=body, headers=sign(SIGNING_SECRET, body))  # a new signature
    assert "posted for approval" in flatten(first.json())
    assert "Already received" in flatten(again.json())
    assert await count(bot, GrantRequest) == 1


async def test_a_replay_landing_on_another_replica_runs_once(tmp_path, db_url, fake_slack):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url)
    one, two = Bot(settings, fake_slack).start(), Bot(settings, fake_slack).start()
    try:
        await seed(one)
        request = captured(one, slash_body("grant acct_1 20 goodwill", user=RESPONDER, channel=CHANNEL,
                                           response_url=one.response_url()))
        answers = await asyncio.gather(asyncio.to_thread(replay, one, request),
                                       asyncio.to_thread(replay, two, request))
        assert sorted("Already received" in a for a in answers) == [False, True], answers
        assert await count(one, GrantRequest) == 1
    finally:
        one.stop()
        two.stop()


async def test_a_read_replayed_on_the_same_replica_is_not_run_again_and_writes_nothing(bot):
    request = captured(bot, slash_body("help", user=RESPONDER, channel=CHANNEL, response_url=bot.response_url()))
    assert "Already received" not in replay(bot, request)
    assert "Already received" in replay(bot, request)
    assert await count(bot, SlackRequestClaim) == 0  # taken in the process: no commit per quick look


async def test_a_read_that_records_replayed_on_another_replica_records_once(tmp_path, db_url, fake_slack):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url)
    one, two = Bot(settings, fake_slack).start(), Bot(settings, fake_slack).start()
    try:
        await seed(one)
        assert "declared" in one.slash_text("incident declare P2 checkout conversion down", user=RESPONDER)
        before = await count(one, TimelineEntry)
        # `credits` in an incident channel puts the look on the incident's timeline
        request = captured(one, slash_body("credits acct_1", user=RESPONDER, channel=CHANNEL,
                                           response_url=one.response_url()))
        answers = await asyncio.gather(asyncio.to_thread(replay, one, request),
                                       asyncio.to_thread(replay, two, request))
        assert sorted("Already received" in a for a in answers) == [False, True], answers
        assert await count(one, TimelineEntry) == before + 1
        assert await count(one, SlackRequestClaim) >= 1
    finally:
        one.stop()
        two.stop()
