"""Batch claims (issue 16 item 5): one statement claims a batch of due jobs with a lease; workers
claiming at once never share a job and together run each due job exactly once; a claim whose
worker died is taken over once its lease has run out, for the same slot (the catch-up counted,
not doubled); the claimed jobs run concurrently, bounded; a job that raises does not stop the
rest of its batch; a slow job does not hold back the next tick's claims; a full claim is followed
by another as soon as there is room. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import select

import pytest

from bot.app import build_services
from bot.clock import FakeClock
from bot.models import ScheduledJob
from bot.scheduler import CLAIM_LEASE, HOLD_AT_MOST, JOBS_AT_ONCE, JobKind, Scheduler, stop_jobs, upsert_job
from tests.support.harness import make_settings

EVERY = timedelta(seconds=3)
postgres_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


async def _services(tmp_path, db_url, fake_slack, clock):
    services = build_services(make_settings(tmp_path, db_url, fake_slack.api_url), clock)
    await services.db.upgrade()
    return services


async def _jobs(services, kind: str, count: int, every: timedelta | None = EVERY) -> list[str]:
    keys = [f"batch:{kind}:{n}" for n in range(count)]
    async with services.db.transaction() as s:
        for key in keys:
            await upsert_job(s, key=key, kind=kind, due_at=services.clock.now(), every=every)
    return keys


async def _rows(services, kind: str) -> list[ScheduledJob]:
    async with services.db.transaction() as s:
        return list((await s.execute(select(ScheduledJob).where(ScheduledJob.kind == kind)
                                     .order_by(ScheduledJob.id))).scalars())


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_workers_claiming_at_once_share_no_job_and_run_each_due_job_exactly_once(tmp_path, db_url, fake_slack):
    clock = FakeClock()
    runs: Counter = Counter()

    async def count(run):
        runs[run.job.key] += 1
        await asyncio.sleep(0)  # let the other workers' claims interleave

    kinds = [JobKind("count", count)]
    fleet = [await _services(tmp_path, db_url, fake_slack, clock) for _ in range(3)]  # an engine each
    try:
        keys = await _jobs(fleet[0], "count", 60)
        schedulers = [Scheduler(kinds, f"w{i}") for i in range(3)]
        claims = await asyncio.gather(*(sch.claim_due(s, 15) for s, sch in zip(fleet, schedulers)))
        claimed = [c.id for batch in claims for c in batch]
        assert len(claimed) == 45 and len(set(claimed)) == 45  # one statement each, no job in two batches
        by = {r.id: r.claimed_by for r in await _rows(fleet[0], "count")}
        assert all(by[c.id] == f"w{i}" for i, batch in enumerate(claims) for c in batch)
        # what each claimed, each runs (at once); the rest is claimed and run by whoever gets there
        first = await asyncio.gather(*(sch.run_claims(s, batch) for s, sch, batch in zip(fleet, schedulers, claims)))
        assert [len(keys_run) for keys_run in first] == [15, 15, 15]
        ran = await asyncio.gather(*(sch.run_due(s, limit=7) for s, sch in zip(fleet, schedulers)))
        while any(ran):
            ran = await asyncio.gather(*(sch.run_due(s, limit=7) for s, sch in zip(fleet, schedulers)))
        assert sorted(runs) == sorted(keys) and set(runs.values()) == {1}, runs.most_common(3)
        rows = await _rows(fleet[0], "count")
        assert {r.due_at for r in rows} == {clock.now() + EVERY}  # each moved to its next slot
        assert {(r.claimed_by, r.claimed_until) for r in rows} == {(None, None)}  # no claim left behind
        assert await asyncio.gather(*(sch.run_due(s) for s, sch in zip(fleet, schedulers))) == [[], [], []]
    finally:
        for s in fleet:
            await s.db.dispose()


async def test_a_dead_workers_claims_are_taken_over_after_the_lease_once_for_the_same_slot(tmp_path, db_url, fake_slack):
    clock = FakeClock()
    runs: list[tuple[str, int]] = []

    async def count(run):
        runs.append((run.job.key, run.missed))

    kinds = [JobKind("count", count)]
    services = await _services(tmp_path, db_url, fake_slack, clock)
    try:
        keys = await _jobs(services, "count", 5)
        slot = clock.now()
        dead, alive = Scheduler(kinds, "dead"), Scheduler(kinds, "alive")
        stale = await dead.claim_due(services, 10)
        assert [c.due_at for c in stale] == [slot] * 5  # ... and it dies
        clock.advance(CLAIM_LEASE - timedelta(seconds=1))
        assert await alive.run_due(services) == []  # the lease holds: nobody runs them meanwhile
        clock.advance(timedelta(seconds=2))  # the lease has run out
        assert await alive.run_due(services) == keys
        # one run each, for the slot it was due at, saying how many slots it missed (caught up once)
        missed = int((CLAIM_LEASE + timedelta(seconds=1)) / EVERY)
        assert missed >= 1 and sorted(runs) == [(key, missed) for key in keys]
        assert {r.due_at for r in await _rows(services, "count")} == {slot + (missed + 1) * EVERY}
        # the dead worker's claims are gone: were it to come back, it would run nothing
        assert await dead.run_claims(services, stale) == []
        assert await dead.run_due(services) == []
        assert len(runs) == 5
    finally:
        await services.db.dispose()


@postgres_only  # (on SQLite the held job's transaction holds the one write lock)
async def test_a_live_worker_renews_the_claims_it_holds_at_each_tick(tmp_path, db_url, fake_slack):
    clock = FakeClock()
    runs: list[str] = []
    gate = asyncio.Event()

    async def count(run):
        runs.append(run.job.key)

    async def wait_first(session, incident_id):  # the jobs wait, claimed, before their row is locked
        await gate.wait()

    services = await _services(tmp_path, db_url, fake_slack, clock)
    holder = Scheduler([JobKind("count", count, lock_first=wait_first)], "holder")
    other = Scheduler([JobKind("count", count)], "other")
    try:
        keys = await _jobs(services, "count", 2)
        assert await holder.start_due(services) == 2
        clock.advance(CLAIM_LEASE - timedelta(seconds=1))
        assert await holder.start_due(services) == 0  # the next tick: renews what it holds
        clock.advance(timedelta(seconds=2))  # past the first lease, within the renewed one
        assert await other.claim_due(services, 10) == []
        gate.set()
        assert await holder.wait_running(10)
        assert sorted(runs) == keys
    finally:
        gate.set()
        await holder.wait_running(10)
        await services.db.dispose()


async def test_a_claimed_job_stopped_or_rescheduled_meanwhile_runs_nothing_and_keeps_no_claim(tmp_path, db_url, fake_slack):
    clock = FakeClock()
    runs: list[str] = []

    async def count(run):
        runs.append(run.job.key)

    scheduler = Scheduler([JobKind("count", count)], "w")
    services = await _services(tmp_path, db_url, fake_slack, clock)
    try:
        await _jobs(services, "count", 2)
        claims = await scheduler.claim_due(services, 10)
        async with services.db.transaction() as s:
            await stop_jobs(s, key="batch:count:0")
            await upsert_job(s, key="batch:count:1", kind="count", due_at=clock.now(), every=EVERY)  # a new schedule
        assert await scheduler.run_claims(services, claims) == []
        assert runs == []
        assert await scheduler.run_due(services) == ["batch:count:1"]  # the new schedule, claimed afresh
        rows = await _rows(services, "count")
        assert [r.status for r in rows] == ["done", "active"]
        assert {(r.claimed_by, r.claimed_until) for r in rows} == {(None, None)}
    finally:
        await services.db.dispose()


async def test_claimed_jobs_run_concurrently_and_bounded(tmp_path, db_url, fake_slack):
    """At most JOBS_AT_ONCE at once on PostgreSQL (a connection each); one at a time on SQLite."""
    clock = FakeClock()
    bound = JOBS_AT_ONCE if "postgresql" in db_url else 1
    active, peak, done = 0, 0, []
    release = asyncio.Event()

    async def hold(run):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1
        done.append(run.job.key)

    services = await _services(tmp_path, db_url, fake_slack, clock)
    scheduler = Scheduler([JobKind("hold", hold)], "w")
    try:
        keys = await _jobs(services, "hold", 3 * bound + 2)
        running = asyncio.create_task(scheduler.run_due(services))
        await _until(lambda: active == bound)
        # held there for a while: had the bound not held, the next jobs would have started meanwhile
        await asyncio.sleep(0.5)
        assert (active, peak) == (bound, bound)
        release.set()
        assert await running == keys
        assert peak == bound and sorted(done) == sorted(keys)
    finally:
        release.set()
        await services.db.dispose()


async def test_a_job_that_raises_does_not_stop_the_others_in_its_batch(tmp_path, db_url, fake_slack):
    clock = FakeClock()
    done: list[str] = []

    async def ok(run):
        done.append(run.job.key)

    async def boom(run):
        raise RuntimeError("job broke")

    services = await _services(tmp_path, db_url, fake_slack, clock)
    try:
        await _jobs(services, "ok", 3)
        await _jobs(services, "boom", 2)
        ran = await Scheduler([JobKind("ok", ok), JobKind("boom", boom)]).run_due(services)
        assert sorted(ran) == sorted(done) and len(done) == 3
        broken = await _rows(services, "boom")
        assert all(j.last_error == "RuntimeError: job broke" for j in broken)
        assert {(j.claimed_by, j.due_at) for j in broken} == {(None, clock.now() + timedelta(minutes=1))}
    finally:
        await services.db.dispose()


@postgres_only  # SQLite has one writer: a job's transaction holds back every other write meanwhile
async def test_a_slow_job_does_not_hold_back_the_next_ticks_claims(tmp_path, db_url, fake_slack):
    clock = FakeClock()
    release, started = asyncio.Event(), asyncio.Event()
    quick: list[str] = []

    async def slow(run):
        started.set()
        await release.wait()

    async def fast(run):
        quick.append(run.job.key)

    services = await _services(tmp_path, db_url, fake_slack, clock)
    scheduler = Scheduler([JobKind("slow", slow), JobKind("fast", fast)])
    try:
        await _jobs(services, "slow", 1)
        assert await scheduler.start_due(services) == 1
        await started.wait()
        clock.advance(timedelta(seconds=1))
        await _jobs(services, "fast", 2)
        assert await scheduler.start_due(services) == 2  # the next tick claims beside the slow job
        await _until(lambda: len(quick) == 2 and scheduler.running == 1)  # the fast ones ran and committed
        assert not release.is_set()  # ... while the slow one is still running
        release.set()
        assert await scheduler.wait_running(10)
        assert scheduler.running == 0
    finally:
        release.set()
        await scheduler.wait_running(10)
        await services.db.dispose()


async def test_a_full_claim_is_followed_by_another_as_soon_as_there_is_room(tmp_path, db_url, fake_slack):
    clock = FakeClock()
    runs: Counter = Counter()

    async def count(run):
        runs[run.job.key] += 1

    services = await _services(tmp_path, db_url, fake_slack, clock)
    scheduler = Scheduler([JobKind("count", count)], "w")
    try:
        keys = await _jobs(services, "count", 3 * HOLD_AT_MOST)
        assert await scheduler.start_due(services) == HOLD_AT_MOST  # never more held at once
        claims = 1
        while True:
            await _until(lambda: scheduler.room.is_set() or scheduler.running == 0)
            if not scheduler.room.is_set():
                break  # the last claim was not full: nothing more was due
            assert scheduler.running <= HOLD_AT_MOST // 2  # room again: half of it free
            claims += 1
            if not await scheduler.start_due(services):
                break
        await scheduler.wait_running(10)
        assert sorted(runs) == sorted(keys) and set(runs.values()) == {1}
        assert 3 <= claims <= 7
        assert await scheduler.start_due(services) == 0 and not scheduler.room.is_set()
    finally:
        await scheduler.wait_running(10)
        await services.db.dispose()


async def test_a_stopping_worker_gives_back_the_claims_it_has_not_started(tmp_path, db_url, fake_slack):
    clock = FakeClock()
    runs: list[str] = []

    async def count(run):
        runs.append(run.job.key)

    services = await _services(tmp_path, db_url, fake_slack, clock)
    try:
        keys = await _jobs(services, "count", 3)
        leaving, staying = Scheduler([JobKind("count", count)], "leaving"), Scheduler([JobKind("count", count)], "staying")
        assert len(await leaving.claim_due(services, 10)) == 3
        await leaving.release_claims(services)
        assert await staying.run_due(services) == keys  # at once, not after the lease
        assert sorted(runs) == keys
    finally:
        await services.db.dispose()
