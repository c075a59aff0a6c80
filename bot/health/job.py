"""The worker's scheduled probe round (every `[health] probe_every`), so the p95
has data and a production service going down is announced without anyone asking."""

from __future__ import annotations

import logging
import os
import socket

from ..services import Services
from .history import claim_round, prune, record_probes
from .probes import ProbeResult, probe_services
from .views import announce_down

log = logging.getLogger("revops.health")
WORKER = f"{socket.gethostname()}-{os.getpid()}"


async def probe_round(services: Services) -> list[ProbeResult] | None:
    """Probe every configured service once and record the results; None when there is
    nothing to probe or another worker has this round."""
    settings = services.settings
    checks = settings.cfg.services
    if not checks:
        return None
    async with services.db.transaction() as session:
        claimed = await claim_round(session, at=services.clock.now(), every=settings.cfg.health.probe_every,
                                    worker=WORKER)
    if not claimed:
        return None
    results = await probe_services(checks)  # no transaction open while the network is waited on
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
