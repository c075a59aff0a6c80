"""The expiry sweep of invoice action requests (mark paid, void): a pending request past its time
expires, is audited, and its approval message is updated in place. Registered in family.py."""

from __future__ import annotations

from datetime import timedelta

from bot.outbox import enqueue
from bot.scheduler import JobKind, JobRun
from bot.services import Services

from . import invoices
from .invoice_views import outcome_message


async def expire_due(services: Services) -> int:
    now = services.clock.now()
    async with services.db.transaction() as session:
        expired = await invoices.expire_overdue(session, now)
        for req in expired:
            await enqueue(session, channel=req.channel, reply=outcome_message(req), at=now, kind="update",
                          ref=req.ref)
    if expired:
        for notify in services.on_posts:
            notify()
    return len(expired)


async def expiry_sweep(run: JobRun) -> None:
    await expire_due(run.services)


INVOICE_JOBS = (JobKind("invoice_action_expiry", expiry_sweep, every=timedelta(seconds=15), after_claim=True,
                        start_now=True),)
