"""The scheduler: jobs stored in the database, claimed atomically, run once.

A job row has a kind, a `due_at` and, when it repeats, `every_seconds`. Each
worker tick (`run_due`) picks the due jobs and runs each in its own
transaction: the row is claimed with `SELECT … FOR UPDATE SKIP LOCKED` on
PostgreSQL (SQLite write transactions are serial and the row is re-checked), the
job writes its posts to the outbox and its timeline entries, and `due_at` moves
to the next slot after *now* — all in one commit. So:

* several workers post each scheduled message once (the claim and the post commit together);
* a worker killed mid-run commits nothing and another worker (or the restart) runs the job;
* after an outage a job runs once and says how many slots it missed, instead of bursting.

Job kinds are pluggable: `register_job_kind("grant_expiry", fn, every=timedelta(minutes=1))` adds a
global job (one row, created on the first tick); incident jobs are created per incident.
A job function receives a `JobRun` and returns None (next slot), "done" (stop) or a datetime
(run next at that time).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..services import Services
from ..settings import Settings
from .models import ScheduledJob

log = logging.getLogger("revops.scheduler")

DONE = "done"
RETRY_AFTER_ERROR = timedelta(minutes=1)

JobResult = str | datetime | None


@dataclass
class JobRun:
    services: Services
    session: AsyncSession
    job: ScheduledJob
    now: datetime
    missed: int  # whole slots missed before this run (0 when on time): a catch-up says so

    @property
    def settings(self) -> Settings:
        return self.services.settings


@dataclass
class JobKind:
    name: str
    run: Callable[[JobRun], Awaitable[JobResult]]
    # Global kinds only: how often (a timedelta, or a function of the settings; None = disabled).
    every: timedelta | Callable[[Settings], timedelta | None] | None = None
    global_job: bool = False
    # Runs after its claim commits (run.session is None; it opens its own transactions): for slow
    # work such as Stripe calls. At most once per slot instead of exactly once.
    after_claim: bool = False


KINDS: dict[str, JobKind] = {}


def register_job_kind(name: str, run: Callable[[JobRun], Awaitable[JobResult]], *,
                      every: timedelta | Callable[[Settings], timedelta | None] | None = None,
                      after_claim: bool = False) -> None:
    """Add a job kind. With `every`, it is a global job: one row, created by the first tick.

    Jobs run inside their claim's transaction (`run.session`) unless `after_claim=True`."""
    KINDS[name] = JobKind(name, run, every, global_job=every is not None, after_claim=after_claim)


def _every_of(kind: JobKind, settings: Settings) -> timedelta | None:
    return kind.every(settings) if callable(kind.every) else kind.every


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


async def ensure_global_jobs(services: Services) -> None:
    """One row per registered global kind (created once, whichever worker gets there first)."""
    now = services.clock.now()
    for kind in list(KINDS.values()):
        if not kind.global_job:
            continue
        every = _every_of(kind, services.settings)
        key = f"global:{kind.name}"
        async with services.db.transaction() as session:
            existing = (await session.execute(select(ScheduledJob).where(ScheduledJob.key == key))).scalar_one_or_none()
            if existing is not None:
                if every is None and existing.status == "active":
                    existing.status = DONE
                elif every is not None and existing.every_seconds != every.total_seconds():
                    existing.every_seconds = every.total_seconds()
                    existing.status = "active"
                continue
            if every is None:
                continue
            try:
                async with session.begin_nested():
                    session.add(ScheduledJob(key=key, kind=kind.name, due_at=now + every, runs=0, status="active",
                                             every_seconds=every.total_seconds()))
            except IntegrityError:
                pass  # another worker created it at the same moment


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
    def __init__(self, name: str | None = None):
        self.name = name or f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._globals_ensured = False

    async def run_due(self, services: Services, limit: int = 100) -> int:
        if not self._globals_ensured:
            await ensure_global_jobs(services)
            self._globals_ensured = True
        now = services.clock.now()
        async with services.db.transaction() as session:
            ids = (await session.execute(
                select(ScheduledJob.id).where(ScheduledJob.status == "active", ScheduledJob.due_at <= now)
                .order_by(ScheduledJob.due_at, ScheduledJob.id).limit(limit)
            )).scalars().all()
        ran = 0
        for job_id in ids:
            try:
                if await self._run_one(services, job_id):
                    ran += 1
            except Exception as exc:
                log.exception("scheduled job %s failed", job_id)
                await self._note_failure(services, job_id, exc)
        if ran:
            for notify in services.on_posts:
                notify()
        return ran

    async def _run_one(self, services: Services, job_id: int) -> bool:
        async with services.db.transaction() as session:
            now = services.clock.now()
            job = (await session.execute(
                select(ScheduledJob)
                .where(ScheduledJob.id == job_id, ScheduledJob.status == "active", ScheduledJob.due_at <= now)
                .with_for_update(skip_locked=True)
            )).scalar_one_or_none()
            if job is None:
                return False  # another worker has it, or ran it already
            kind = KINDS.get(job.kind)
            if kind is None:
                log.warning("no handler for scheduled job kind %s (job %s); retrying later", job.kind, job.id)
                job.due_at = now + RETRY_AFTER_ERROR
                return False
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
        if kind.after_claim:
            run.session = None  # type: ignore[assignment]
            await kind.run(run)
        return True

    async def _note_failure(self, services: Services, job_id: int, exc: Exception) -> None:
        try:
            async with services.db.transaction() as session:
                job = await session.get(ScheduledJob, job_id)
                if job is not None and job.status == "active":
                    job.due_at = services.clock.now() + RETRY_AFTER_ERROR
                    job.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        except Exception:
            log.exception("could not record the failure of job %s", job_id)


def scheduler_of(services: Services) -> Scheduler:
    scheduler = services.extras.get("scheduler")
    if scheduler is None:
        scheduler = services.extras["scheduler"] = Scheduler()
    return scheduler


async def run_due(services: Services, limit: int = 100) -> int:
    """Run every due job once (what the worker's tick calls; tests call it with a FakeClock)."""
    from ..jobs import register_scheduled_kinds

    register_scheduled_kinds()

    return await scheduler_of(services).run_due(services, limit)


def periodic_job(settings: Settings):
    from ..worker import PeriodicJob

    return PeriodicJob("scheduler", settings.env.revops_tick, run_due)
