"""The one job system: jobs stored in the database, claimed atomically, run once.

A job row (`scheduled_jobs`) has a kind, a `due_at` and, when it repeats, `every_seconds`.
Each worker tick (`Scheduler.run_due`) picks the due jobs and runs each in its own
transaction: the row is claimed with `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL
(SQLite write transactions are serial and the row is re-checked), the job writes its posts
to the outbox and its timeline entries, and `due_at` moves to the next slot after *now* —
all in one commit. So:

* several workers post each scheduled message once (the claim and the post commit together);
* a worker killed mid-run commits nothing and another worker (or the restart) runs the job;
* after an outage a job runs once and says how many slots it missed, instead of bursting.

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
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from sqlalchemy import select, update
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

JobResult = str | datetime | None


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
    lock_first: Callable[[AsyncSession, int | None], Awaitable[None]] | None = None

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

    async def run_due(self, services: "Services", limit: int = 100) -> list[str]:
        """Run each job due now once (at most `limit`); returns the keys of the jobs that ran
        here, in the order they ran (a job another worker took is not among them)."""
        if not self._globals_ensured:
            await self.ensure_global_jobs(services)
            self._globals_ensured = True
        now = services.clock.now()
        async with services.db.transaction() as session:
            due = (await session.execute(
                select(ScheduledJob.id, ScheduledJob.kind, ScheduledJob.incident_id)
                .where(ScheduledJob.status == "active", ScheduledJob.due_at <= now)
                .order_by(ScheduledJob.due_at, ScheduledJob.id).limit(limit)
            )).all()
        gate = asyncio.Semaphore(JOBS_AT_ONCE if services.db.dialect == "postgresql" else 1)

        async def one(job_id: int, kind_name: str, incident_id: int | None) -> str | None:
            async with gate:
                try:
                    return await self._run_one(services, job_id, self.kinds.get(kind_name), incident_id)
                except Exception as exc:
                    log.exception("scheduled job %s failed", job_id)
                    await self._note_failure(services, job_id, exc)
                    return None

        # in the order they fell due (gather keeps it), whichever finished first
        ran = [key for key in await asyncio.gather(*(one(*row) for row in due)) if key is not None]
        if ran:
            for notify in services.on_posts:
                notify()
        return ran

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

    async def _run_one(self, services: "Services", job_id: int, lock_kind: JobKind | None,
                       incident_id: int | None) -> str | None:
        """Claim and run one job; its key when it ran here, None when it was not this worker's."""
        async with services.db.transaction() as session:
            if lock_kind is not None and lock_kind.lock_first is not None:
                await lock_kind.lock_first(session, incident_id)
            now = services.clock.now()
            job = (await session.execute(
                select(ScheduledJob)
                .where(ScheduledJob.id == job_id, ScheduledJob.status == "active", ScheduledJob.due_at <= now)
                .with_for_update(skip_locked=True)
            )).scalar_one_or_none()
            if job is None:
                return None  # another worker has it, or ran it already
            kind = self.kinds.get(job.kind)
            if kind is None:
                log.warning("no handler for scheduled job kind %s (job %s); retrying later", job.kind, job.id)
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
                if job is not None and job.status == "active":
                    job.due_at = services.clock.now() + RETRY_AFTER_ERROR
                    job.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        except Exception:
            log.exception("could not record the failure of job %s", job_id)


async def run_due(services: "Services", limit: int = 100) -> list[str]:
    """One round of the process's scheduler (`services.scheduler`): what a worker tick runs."""
    return await services.scheduler.run_due(services, limit)


async def drain(services: "Services") -> list[str]:
    """Run the process's scheduler until nothing is due now (see `Scheduler.drain`)."""
    return await services.scheduler.drain(services)
