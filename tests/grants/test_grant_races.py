"""The money limits under concurrency (SPEC §5, §8): the daily cap (granted + pending), `max_grant`
and the per-requester limit on pending requests hold when many requests and approvals race, on
SQLite and PostgreSQL, through signed Slack requests over real HTTP."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from bot.billing.models import LedgerEntry
from bot.clock import FakeClock
from bot.grants.models import GrantRequest
from tests.support.harness import ADMIN, APPROVER, APPROVER2, RESPONDER, Bot, flatten, make_settings

from .test_grants import seed

REQUESTERS = (RESPONDER, "U0RESPONDER2", APPROVER, APPROVER2, ADMIN)
POSTED = re.compile(r"Request #(\d+) posted for approval")


def _settings(tmp_path, db_url, fake_slack, per_requester: int):
    return make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=f"""
[credits]
max_grant = 500
daily_cap = 1000
max_pending_per_requester = {per_requester}
approval_ttl = "30m"
""")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def start(tmp_path, db_url, fake_slack, clock):
    """Start a seeded bot with this many pending requests allowed per requester."""
    started = []

    def go(per_requester: int) -> Bot:
        running = Bot(_settings(tmp_path, db_url, fake_slack, per_requester), fake_slack, clock=clock).start()
        started.append(running)
        asyncio.run(seed(running, clock))
        return running

    yield go
    for running in started:
        running.stop()


async def _used_today(bot, account="acct_1") -> tuple[int, int]:
    """Credits granted on the account by the grant flow, and still pending (not rehearsals)."""
    async with bot.db() as db, db.transaction() as s:
        granted = (await s.execute(select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
            LedgerEntry.account_id == account, LedgerEntry.kind == "grant"))).scalar_one()
        pending = (await s.execute(select(func.coalesce(func.sum(GrantRequest.amount), 0)).where(
            GrantRequest.account_id == account, GrantRequest.status == "pending"))).scalar_one()
    return int(granted), int(pending)


async def _count_requests(bot) -> int:
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(func.count()).select_from(GrantRequest))).scalar_one()


async def _pending_per_person(bot) -> list:
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(GrantRequest.requester, func.count()).where(
            GrantRequest.status == "pending").group_by(GrantRequest.requester))).all()


def _ask_all(bot, jobs: list[tuple[str, str]]) -> list[str]:
    """Every (user, text) at once, from as many threads: the acknowledgements' texts, in order."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda job: bot.answer_text(job[1], user=job[0]), jobs))


def test_forty_concurrent_requests_never_pass_the_daily_cap(start):
    bot = start(per_requester=40)
    jobs = [(REQUESTERS[i % len(REQUESTERS)], f"grant acct_1 100 outage credit {i}") for i in range(40)]
    answers = _ask_all(bot, jobs)
    accepted = [a for a in answers if POSTED.search(a)]
    refused = [a for a in answers if "daily cap" in a]
    assert len(accepted) == 10 and len(refused) == 30, answers  # 10 × 100 = the cap, exactly
    assert all("would exceed the cap of 1000" in a for a in refused)
    assert asyncio.run(_used_today(bot)) == (0, 1000)
    assert asyncio.run(_count_requests(bot)) == 10


def test_requests_racing_approvals_never_pass_the_cap_nor_the_per_requester_limit(start):
    bot = start(per_requester=2)
    # Two pending 200s of one responder; their approvals race 40 new requests from five people.
    first = [int(POSTED.search(bot.slash_text(f"grant acct_1 200 first wave {i}", user=RESPONDER)).group(1))
             for i in range(2)]
    assert "you already have 2 pending requests for acct_1 (at most 2)" in bot.slash_text(
        "grant acct_1 10 one too many", user=RESPONDER)

    def approve(rid_user):
        rid, user = rid_user
        response, url = bot.click("revops:grants.approve", str(rid), user=user)
        assert response.status_code == 200
        return url

    jobs = [(REQUESTERS[i % len(REQUESTERS)], f"grant acct_1 150 second wave {i}") for i in range(40)]
    with ThreadPoolExecutor(max_workers=44) as pool:
        clicks = [pool.submit(approve, (rid, APPROVER if i else APPROVER2)) for i, rid in enumerate(first)]
        asks = [pool.submit(bot.answer_text, text, user=user) for user, text in jobs]
        answers = [f.result() for f in asks]
        urls = [f.result() for f in clicks]
    decided = [flatten(bot.wait_response(url, timeout=30)) for url in urls]
    assert all("Approved request" in d for d in decided), decided

    accepted = [a for a in answers if POSTED.search(a)]
    assert all(POSTED.search(a) or "daily cap" in a or "pending requests for acct_1" in a for a in answers), answers
    granted, pending = asyncio.run(_used_today(bot))
    assert granted == 400
    assert granted + pending <= 1000
    assert pending == 150 * len(accepted) and len(accepted) == 4  # (1000 − 400) // 150: the cap, not the people
    per_person = asyncio.run(_pending_per_person(bot))
    assert all(count <= 2 for _, count in per_person), per_person


def test_the_pending_limit_is_per_requester(start):
    bot = start(per_requester=1)
    assert POSTED.search(bot.slash_text("grant acct_1 10 real one", user=RESPONDER))
    refused = bot.slash_text("grant acct_1 10 second one", user=RESPONDER)
    assert "you already have 1 pending request for acct_1 (at most 1); wait for a decision or cancel one" in refused
    assert "Usage: /revops grant" in refused
    assert POSTED.search(bot.slash_text("grant acct_1 10 someone else", user="U0RESPONDER2"))
