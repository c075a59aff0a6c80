"""The approval-expiry sweep the worker runs: pending requests past `approval_ttl` expire,
and their approval messages are updated in place (`views.outcome_message`). `GRANT_JOBS` is
what the grants family hands the scheduler (bot/grants/family.py)."""

from __future__ import annotations

from datetime import timedelta

from bot.outbox import enqueue
from bot.scheduler import JobKind, JobRun
from bot.services import Services

from . import service
from .views import outcome_message


async def expire_due(services: Services) -> int:
    """Expire every pending request past its time and update its message in place; how many."""
    now = services.clock.now()
    async with services.db.transaction() as session:
        expired = await service.expire_overdue(session, now)
        for req in expired:
            await enqueue(session, channel=req.channel, reply=outcome_message(req), at=now, kind="update",
                          ref=req.ref)
    if expired:
        for notify in services.on_posts:
            notify()
    return len(expired)


async def expiry_sweep(run: JobRun) -> None:
    """The scheduled sweep (each expiry is a conditional update, so a click racing it decides once)."""
    await expire_due(run.services)


EXPIRY_SWEEP_EVERY = timedelta(seconds=15)
GRANT_JOBS = (JobKind("grant_expiry", expiry_sweep, every=EXPIRY_SWEEP_EVERY, after_claim=True, start_now=True),)
