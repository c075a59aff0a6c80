"""The one job system: jobs stored in the database, claimed in batches, run once.

A job row (`scheduled_jobs`) has a kind, a `due_at` and, when it repeats, `every_seconds`.
A worker tick claims the due jobs in ONE statement (`Scheduler.claim_due`): up to a batch of due,
unclaimed rows are picked with `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite runs the statement
as its one writer) and marked `claimed_by` this worker until `claimed_until` (a lease,
`CLAIM_LEASE`); `due_at` stays the slot. The claimed jobs then run concurrently (at most
`JOBS_AT_ONCE` at once on PostgreSQL, one at a time on SQLite), each in its own transaction: the
job's row is locked again and still this worker's, the job writes its posts to the outbox and
its timeline entries, and `due_at` moves to the next slot after *now* with the claim cleared —
all in one commit. So:

* several workers post each scheduled message once (the run, its posts and the move commit
  together, and a worker runs only a job it holds the claim of);
* a worker killed mid-run commits nothing; its claims lapse after `CLAIM_LEASE` (a live worker
  renews the claims it holds at each tick) and another worker takes them over, for the same slot (a catch-up counts the slots missed, it does not
  post each of them);
* after an outage a job runs once and says how many slots it missed, instead of bursting.

A long-running worker (`bot/worker.py`) starts its claimed jobs beside its tick
(`Scheduler.start_due`): a slow job never stretches the tick, and as soon as it has room again
after a full claim it claims more, so a backlog is worked off at the pace of its jobs, not of
its ticks.

The core knows no job kind. Families declare theirs (`JobKind`) in their registration
(`bot/<family>/family.py`); the composition root (bot/app.py) hands them to `Scheduler`.
A kind with `every` is a global job: one row, created by the first tick; so is a kind with `at`
(a calendar slot, e.g. "mon 09:00": the next slot after a time, from the settings). Other kinds are
scheduled by their family with `upsert_job` (per incident, per alert...). A job function
receives a `JobRun` and returns None (next slot), DONE (stop) or a datetime (run next then).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .models import ScheduledJob
from .settings import Settings

if TYPE_CHECKING:
    from .services import Services

log = logging.getLogger("revops.scheduler")

DONE = "done"
RETRY_AFTER_ERROR = timedelta(minutes=1)
DRAIN_ROUNDS = 1000  # a drain that still finds due work after this many rounds is a bug, not a backlog
# Due jobs a PostgreSQL worker runs at once (each in its own transaction, on its own connection);
# SQLite has one writer, so its jobs run one after another.
JOBS_AT_ONCE = 8
# How many jobs a long-running worker holds claimed (running or waiting to) at most: twice what it
# runs at once, so that a claim is never held long before it runs and the other workers get the rest.
HOLD_AT_MOST = 2 * JOBS_AT_ONCE
# A claim outlives a worker that died (before or while running its job) by this much; then another
# takes it over. Short, because a live worker renews the claims it holds at every tick; a job that
# is running is protected by its row lock as well (another worker's claim skips locked rows).
CLAIM_LEASE = timedelta(seconds=3)

JobResult = str | datetime | None


@dataclass(frozen=True)
class Claim:
    """A job this worker claimed: what it needs to run it (`due_at`: the slot it is due for)."""

    id: int
    kind: str
    incident_id: int | None
    due_at: datetime


@dataclass
class JobRun:
    services: "Services"
    session: AsyncSession | None  # None for `after_claim` kinds: they open their own transactions
    job: ScheduledJob
    now: datetime
    missed: int  # whole slots missed before this run (0 when on time): a catch-up says so

    @property
    def settings(self) -> Settings:
        return self.services.settings


@dataclass(frozen=True)
class JobKind:
    """A kind of scheduled job, declared by a family.

    `every` (a timedelta, or a function of the settings returning one or None = disabled) makes
    it a global job: one row, created by the first tick, first due one interval later — or at
    once with `start_now`. `after_claim=True` runs it after its claim commits (`run.session` is
    None; it opens its own transactions), for network work such as Stripe calls or health probes:
    at most once per slot instead of exactly once, and no transaction open while it waits."""

    name: str
    run: Callable[[JobRun], Awaitable[JobResult]]
    every: timedelta | Callable[[Settings], timedelta | None] | None = None
    at: Callable[[Settings, datetime], datetime | None] | None = None
    after_claim: bool = False
    start_now: bool = False
    # What the run locks before it claims its job row, given the job's `incident_id`: a job and a
    # command that touch the same rows must lock them in one order, or PostgreSQL deadlocks them
    # (the incidents family: the incident row first, as every incident command does).
    lock_first: Callable[[AsyncSession, int | None], Awaitable[Any]] | None = None  # may return the locked row

    @property
    def global_job(self) -> bool:
        return self.every is not None or self.at is not None

    def every_for(self, settings: Settings) -> timedelta | None:
        return self.every(settings) if callable(self.every) else self.every


async def upsert_job(session: AsyncSession, *, key: str, kind: str, due_at: datetime,
                     every: timedelta | None = None, incident_id: int | None = None,
                     data: dict[str, Any] | None = None) -> ScheduledJob:
    job = (await session.execute(select(ScheduledJob).where(ScheduledJob.key == key))).scalar_one_or_none()
    if job is None:
        job = ScheduledJob(key=key, kind=kind, runs=0, status="active")
        session.add(job)
    job.kind = kind
    job.due_at = due_at
    job.every_seconds = every.total_seconds() if every else None
    job.incident_id = incident_id
    job.data = data
    job.status = "active"
    job.claimed_by = job.claimed_until = None  # a new schedule: a claim of the old one runs nothing
    await session.flush()
    return job


async def stop_jobs(session: AsyncSession, *, incident_id: int | None = None, key: str | None = None,
                    kinds: tuple[str, ...] | None = None) -> None:
    stmt = update(ScheduledJob).where(ScheduledJob.status == "active")
    if incident_id is not None:
        stmt = stmt.where(ScheduledJob.incident_id == incident_id)
    if key is not None:
        stmt = stmt.where(ScheduledJob.key == key)
    if kinds:
        stmt = stmt.where(ScheduledJob.kind.in_(kinds))
    await session.execute(stmt.values(status=DONE))


def _aware(value: datetime) -> datetime:
    """A datetime RETURNING handed back (SQLite's are naive, in UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def next_slot(at: Callable[[Settings, datetime], datetime | None], settings: Settings, due_at: datetime,
              now: datetime) -> tuple[datetime | None, int]:
    """A calendar job's first slot after `now`, and how many of its slots passed unrun."""
    missed, slot = 0, at(settings, due_at)
    while slot is not None and slot <= now and missed < DRAIN_ROUNDS:
        missed += 1
        slot = at(settings, slot)
    return at(settings, now), missed


def next_due(due_at: datetime, every: timedelta | None, now: datetime) -> tuple[datetime | None, int]:
    """The first slot after `now` on the job's cadence, and how many slots were missed."""
    if every is None or every.total_seconds() <= 0:
        return None, 0
    late = (now - due_at).total_seconds()
    missed = max(int(math.floor(late / every.total_seconds())), 0)
    slot = due_at + every * (missed + 1)
    if slot <= now:  # float rounding
        slot = now + every
    return slot, missed


class Scheduler:
    """Runs the due jobs of the kinds it was given (one per process; safe with many processes)."""

    def __init__(self, kinds: Iterable[JobKind] = (), name: str | None = None):
        self.kinds: dict[str, JobKind] = {}
        for kind in kinds:
            if kind.name in self.kinds:
                raise ValueError(f"duplicate job kind {kind.name}")
            self.kinds[kind.name] = kind
        self.name = name or f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._globals_ensured = False
        self._gate_of: tuple[Any, asyncio.Semaphore] | None = None
        self._held: dict[int, asyncio.Task] = {}  # job id -> its run, for the jobs `start_due` claimed
        self._full = False  # the last `start_due` claim filled its room (more may be due)
        self.room = asyncio.Event()  # set when a full claim's jobs have left room for more
        self.claim_seconds: list[float] = []  # how long each `start_due` claim took (the last 1,000)
        self.claim_lag_seconds: list[float] = []  # how late after its slot each job was claimed

    async def ensure_global_jobs(self, services: "Services") -> None:
        """One row per global kind (created once, whichever worker gets there first); a kind
        whose interval the settings changed is moved to it, one the settings disable is stopped."""
        now = services.clock.now()
        for kind in self.kinds.values():
            if not kind.global_job:
                continue
            if kind.at is not None:
                await self._ensure_calendar_job(services, kind, now)
                continue
            every = kind.every_for(services.settings)
            key = f"global:{kind.name}"
            async with services.db.transaction() as session:
                existing = (await session.execute(
                    select(ScheduledJob).where(ScheduledJob.key == key))).scalar_one_or_none()
                if existing is not None:
                    if every is None:
                        existing.status = DONE
                    elif existing.every_seconds != every.total_seconds() or existing.status != "active":
                        existing.every_seconds = every.total_seconds()
                        existing.status = "active"
                        existing.due_at = min(existing.due_at, now + every)
                    continue
                if every is None:
                    continue
                try:
                    async with session.begin_nested():
                        session.add(ScheduledJob(key=key, kind=kind.name, due_at=now if kind.start_now else now + every,
                                                 runs=0, status="active", every_seconds=every.total_seconds()))
                except IntegrityError:
                    pass  # another worker created it at the same moment

    async def _ensure_calendar_job(self, services: "Services", kind: JobKind, now: datetime) -> None:
        """A calendar kind's row, due at its next slot; a slot the settings moved is followed (a
        slot already passed is kept: it runs once, as a catch-up); disabled: stopped."""
        key = f"global:{kind.name}"
        first = kind.at(services.settings, now)
        async with services.db.transaction() as session:
            existing = (await session.execute(select(ScheduledJob).where(ScheduledJob.key == key))).scalar_one_or_none()
            if existing is not None:
                if first is None:
                    existing.status = DONE
                elif existing.status != "active" or (existing.due_at > now and existing.due_at != first):
                    existing.status, existing.due_at, existing.every_seconds = "active", first, None
                return
            if first is None:
                return
            try:
                async with session.begin_nested():
                    session.add(ScheduledJob(key=key, kind=kind.name, due_at=first, runs=0, status="active"))
            except IntegrityError:
                pass  # another worker created it at the same moment

    async def claim_due(self, services: "Services", limit: int = 100) -> list[Claim]:
        """Claim up to `limit` due jobs in one statement and one short transaction, oldest slot
        first: rows another worker holds (locked now, or claimed with a lease not yet run out) are
        skipped. Returns the claims in the order their jobs fell due."""
        if not self._globals_ensured:
            await self.ensure_global_jobs(services)
            self._globals_ensured = True
        if limit <= 0:
            return []
        now = services.clock.now()
        picked = (select(ScheduledJob.id)
                  .where(ScheduledJob.status == "active", ScheduledJob.due_at <= now,
                         or_(ScheduledJob.claimed_until.is_(None), ScheduledJob.claimed_until < now))
                  .order_by(ScheduledJob.due_at, ScheduledJob.id).limit(limit)
                  .with_for_update(skip_locked=True).cte("picked"))
        async with services.db.transaction() as session:
            rows = (await session.execute(
                update(ScheduledJob).where(ScheduledJob.id.in_(select(picked.c.id)))
                .values(claimed_by=self.name, claimed_until=now + CLAIM_LEASE)
                .returning(ScheduledJob.id, ScheduledJob.kind, ScheduledJob.incident_id, ScheduledJob.due_at)
                .execution_options(synchronize_session=False))).all()
        claims = [Claim(row[0], row[1], row[2], _aware(row[3])) for row in rows]
        return sorted(claims, key=lambda c: (c.due_at, c.id))

    def _gate(self, services: "Services") -> asyncio.Semaphore:
        """How many claimed jobs run at once here (one gate per event loop)."""
        loop = asyncio.get_running_loop()
        if self._gate_of is None or self._gate_of[0] is not loop:
            self._gate_of = (loop, asyncio.Semaphore(JOBS_AT_ONCE if services.db.dialect == "postgresql" else 1))
        return self._gate_of[1]

    async def _guarded(self, services: "Services", claim: Claim) -> str | None:
        """Run one claimed job; a job that raises is noted and retried later, the others go on."""
        async with self._gate(services):
            try:
                return await self._run_one(services, claim)
            except Exception as exc:
                log.exception("scheduled job %s failed", claim.id)
                await self._note_failure(services, claim.id, exc)
                return None

    async def run_due(self, services: "Services", limit: int = 100) -> list[str]:
        """Claim the jobs due now (at most `limit`, one batch), run them (concurrently on
        PostgreSQL, bounded) and wait for them; returns the keys of the jobs that ran here, in the
        order they fell due (a job another worker holds is not among them)."""
        return await self.run_claims(services, await self.claim_due(services, limit))

    async def run_claims(self, services: "Services", claims: list[Claim]) -> list[str]:
        """Run jobs claimed by `claim_due` (concurrently on PostgreSQL, bounded) and wait for them;
        the keys of those that ran, in the order of `claims`."""
        # in the order they fell due (gather keeps it), whichever finished first
        ran = [key for key in await asyncio.gather(*(self._guarded(services, c) for c in claims)) if key is not None]
        if ran:
            for notify in services.on_posts:
                notify()
        return ran

    async def start_due(self, services: "Services") -> int:
        """A long-running worker's claim: as many due jobs as it has room for (`HOLD_AT_MOST`
        held here at once), started beside the caller (bounded by `JOBS_AT_ONCE`). Returns how
        many it claimed. When a claim filled the room, `room` is set as soon as half of it is free
        again: more may be due (a backlog), and the worker claims again without waiting a tick."""
        room = HOLD_AT_MOST - len(self._held)
        started = time.monotonic()
        if self._held:
            await self._renew(services)
        claims = [c for c in await self.claim_due(services, room) if c.id not in self._held]
        self.claim_seconds.append(time.monotonic() - started)
        del self.claim_seconds[:-1000]
        now = services.clock.now()
        self.claim_lag_seconds += [(now - c.due_at).total_seconds() for c in claims]
        del self.claim_lag_seconds[:-5000]
        self._full = len(claims) >= room  # room 0: all held, more may be due
        self.room.clear()  # (jobs that finished while it claimed made room for this claim)
        for claim in claims:
            task = asyncio.create_task(self._guarded(services, claim), name=f"job-{claim.id}")
            self._held[claim.id] = task
            task.add_done_callback(self._finished(services, claim.id))
        return len(claims)

    async def _renew(self, services: "Services") -> None:
        """Extend the lease of the claims held here whose job has not started (rows a running job
        has locked are skipped: its lock protects it, and the tick must not wait for it)."""
        now = services.clock.now()
        mine = (select(ScheduledJob.id)
                .where(ScheduledJob.claimed_by == self.name, ScheduledJob.id.in_(list(self._held)))
                .with_for_update(skip_locked=True).cte("mine"))
        async with services.db.transaction() as session:
            await session.execute(update(ScheduledJob).where(ScheduledJob.id.in_(select(mine.c.id)))
                                  .values(claimed_until=now + CLAIM_LEASE)
                                  .execution_options(synchronize_session=False))

    def _finished(self, services: "Services", job_id: int):
        def done(task: asyncio.Task) -> None:
            self._held.pop(job_id, None)
            if not task.cancelled() and task.exception() is None and task.result() is not None:
                for notify in services.on_posts:
                    notify()
            if self._full and len(self._held) <= HOLD_AT_MOST // 2:
                self.room.set()
        return done

    @property
    def running(self) -> int:
        """Jobs claimed by `start_due` and not finished yet."""
        return len(self._held)

    async def wait_running(self, timeout: float | None = None) -> bool:
        """Wait (at most `timeout` seconds) for the jobs `start_due` started; whether all finished.
        What a graceful stop waits on: a job cut short commits nothing and its claim lapses."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._held:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            await asyncio.wait(list(self._held.values()), timeout=left)
        return True

    async def release_claims(self, services: "Services") -> None:
        """On shutdown: give back the claims of jobs this worker has not started (the others
        finished, or lapse with their transaction)."""
        async with services.db.transaction() as session:
            await session.execute(update(ScheduledJob).where(ScheduledJob.claimed_by == self.name)
                                  .values(claimed_by=None, claimed_until=None)
                                  .execution_options(synchronize_session=False))

    async def drain(self, services: "Services", limit: int = 100) -> list[str]:
        """Run due jobs until a round finds none due at the clock's present; returns the keys run.

        What tests (and `revops worker --once`) wait on instead of sleeping: when it returns,
        every job that was due has run here or is being run by another worker."""
        total: list[str] = []
        for _ in range(DRAIN_ROUNDS):
            ran = await self.run_due(services, limit)
            if not ran:
                return total
            total += ran
        raise RuntimeError(f"the scheduler still had due jobs after {DRAIN_ROUNDS} rounds")

    async def _run_one(self, services: "Services", claim: Claim) -> str | None:
        """Run one job this worker claimed; its key when it ran here, None when it was not to run
        (another worker took the claim over, the job was stopped or rescheduled meanwhile)."""
        lock_kind = self.kinds.get(claim.kind)
        async with services.db.transaction() as session:
            locked = None  # what lock_first loaded, held for the transaction (the session holds it weakly)
            if lock_kind is not None and lock_kind.lock_first is not None:
                locked = await lock_kind.lock_first(session, claim.incident_id)
            now = services.clock.now()
            job = (await session.execute(
                select(ScheduledJob).where(ScheduledJob.id == claim.id, ScheduledJob.claimed_by == self.name)
                .with_for_update()
            )).scalar_one_or_none()
            if job is None:
                return None  # the lease ran out and another worker has it, or it was rescheduled
            # The claim is cleared with the job's other changes, in one UPDATE (the row is locked
            # here until the commit, so no other worker can take it meanwhile).
            if job.status != "active" or job.due_at > now:
                job.claimed_by = job.claimed_until = None
                return None  # stopped, or moved to later, since it was claimed
            kind = self.kinds.get(job.kind)
            if kind is None:
                log.warning("no handler for scheduled job kind %s (job %s); retrying later", job.kind, job.id)
                job.claimed_by = job.claimed_until = None
                job.due_at = now + RETRY_AFTER_ERROR
                return None
            if kind.at is not None:
                slot, missed = next_slot(kind.at, services.settings, job.due_at, now)
            else:
                every = timedelta(seconds=job.every_seconds) if job.every_seconds else None
                slot, missed = next_due(job.due_at, every, now)
            run = JobRun(services, session, job, now, missed)
            # The job's posts, timeline entries and the move to its next slot commit together.
            result = None if kind.after_claim else await kind.run(run)
            del locked
            job.claimed_by = job.claimed_until = None
            job.runs += 1
            job.last_run_at = now
            job.last_error = None
            if result == DONE or (slot is None and not isinstance(result, datetime)):
                job.status = DONE
            elif isinstance(result, datetime):
                job.due_at = result if result > now else (slot or now + RETRY_AFTER_ERROR)
            else:
                job.due_at = slot
            key = job.key
        if kind.after_claim:
            run.session = None
            await kind.run(run)
        return key

    async def _note_failure(self, services: "Services", job_id: int, exc: Exception) -> None:
        try:
            async with services.db.transaction() as session:
                job = await session.get(ScheduledJob, job_id)
                if job is not None and job.status == "active" and job.claimed_by in (None, self.name):
                    job.due_at = services.clock.now() + RETRY_AFTER_ERROR
                    job.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                    job.claimed_by = job.claimed_until = None
        except Exception:
            log.exception("could not record the failure of job %s", job_id)


async def run_due(services: "Services", limit: int = 100) -> list[str]:
    """One round of the process's scheduler (`services.scheduler`): what a worker tick runs."""
    return await services.scheduler.run_due(services, limit)


async def drain(services: "Services") -> list[str]:
    """Run the process's scheduler until nothing is due now (see `Scheduler.drain`)."""
    return await services.scheduler.drain(services)
