"""The scheduled probe round (every `[health] probe_every`), so the p95 has data and a
production service going down is announced without anyone asking.

It runs as the health family's `health_probes` job (bot/health/family.py): the scheduler's
claim gives each interval to one worker, whatever the number of workers, and the probes run
after the claim commits, so no transaction is open while the network is waited on."""

from __future__ import annotations

import logging
from datetime import timedelta

from ..scheduler import JobRun
from ..services import Services
from ..settings import Settings
from .history import prune, record_probes
from .probes import ProbeResult, probe_services
from .views import announce_down

log = logging.getLogger("revops.health")


def probe_every(settings: Settings) -> timedelta | None:
    """How often the worker probes; None (the job is off) when no service is configured."""
    return settings.cfg.health.probe_every if settings.cfg.services else None


async def probe_round(services: Services) -> list[ProbeResult] | None:
    """Probe every configured service once and record the results; None when there is nothing to probe."""
    settings = services.settings
    checks = settings.cfg.services
    if not checks:
        return None
    results = await probe_services(checks)
    async with services.db.transaction() as session:
        now = services.clock.now()
        went_down = await record_probes(session, results, at=now)
        await announce_down(session, went_down, at=now, settings=settings)
        await prune(session, at=now)
    for r in went_down:
        log.warning("health: %s (%s) went down: %s", r.name, r.env, r.detail)
    if went_down:
        for notify in services.on_posts:
            notify()
    return results


async def scheduled_round(run: JobRun) -> None:
    await probe_round(run.services)
