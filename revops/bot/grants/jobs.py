"""The grant expiry sweep as a scheduled job (one row, claimed by one worker per slot)."""

from datetime import timedelta

from ..incidents.scheduler import JobRun, register_job_kind
from .service import expire_due

SWEEP_EVERY = timedelta(seconds=30)


async def grant_expiry(run: JobRun):
    await expire_due(run.services)  # its own transaction; safe to overlap (conditional updates)
    return None


register_job_kind("grant_expiry", grant_expiry, every=SWEEP_EVERY, after_claim=True)
