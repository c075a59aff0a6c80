"""Probe results kept for the p95, the last status per service, and which production
services have just gone down (the one post about each is `views.announce_down`).

Safe on several workers: the transition to down is a conditional update (only
the writer that flips the row sees it go down), and the scheduler gives each probe round
to one worker (the `health_probes` job).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .models import HealthProbe, HealthStatus
from .probes import ProbeResult

RECENT_PROBES = 50  # the p95 is taken over this many of the newest probes...
RECENT_WINDOW = timedelta(hours=24)  # ...no older than this
KEEP_FOR = timedelta(days=7)


@dataclass
class P95:
    value_ms: float | None
    samples: int
    slo_ms: float

    @property
    def within_slo(self) -> bool | None:
        return None if self.value_ms is None else self.value_ms <= self.slo_ms


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (the value at least pct% of the samples do not exceed)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


async def record_probes(session: AsyncSession, results: Iterable[ProbeResult], *, at: datetime) -> list[ProbeResult]:
    """Store the results and update each service's last status. Returns the production
    services that have just gone down (each seen by one writer only)."""
    went_down: list[ProbeResult] = []
    for r in results:
        session.add(HealthProbe(service=r.name, env=r.env, at=at, status=r.status, http_code=r.code,
                                latency_ms=r.latency_ms, version=r.version, detail=r.detail[:200]))
        if await _transition(session, r, at) and r.status == "down" and r.env == "production":
            went_down.append(r)
    await session.flush()
    return went_down


async def _transition(session: AsyncSession, r: ProbeResult, at: datetime) -> bool:
    """Set the service's last status; True when it changed (a conditional update, so
    of two concurrent writers only one sees the change)."""
    changed = await session.execute(
        update(HealthStatus)
        .where(HealthStatus.service == r.name, HealthStatus.env == r.env, HealthStatus.status != r.status)
        .values(status=r.status, changed_at=at, checked_at=at)
    )
    if changed.rowcount == 1:
        return True
    exists = await session.execute(
        update(HealthStatus).where(HealthStatus.service == r.name, HealthStatus.env == r.env)
        .values(checked_at=at)
    )
    if exists.rowcount == 1:
        return False
    try:
        async with session.begin_nested():
            session.add(HealthStatus(service=r.name, env=r.env, status=r.status, changed_at=at, checked_at=at))
    except IntegrityError:  # another writer recorded this service first
        return False
    return True


async def recent_p95(session: AsyncSession, results: Iterable[ProbeResult], *, at: datetime) -> dict[tuple[str, str], P95]:
    """The p95 latency of the recent probes of each service, against its SLO.
    Probes that got no answer at all (refused, DNS) carry no latency and are not counted;
    timeouts count with the time waited."""
    out: dict[tuple[str, str], P95] = {}
    for r in results:
        if r.key in out:
            continue
        rows = (await session.execute(
            select(HealthProbe.latency_ms)
            .where(HealthProbe.service == r.name, HealthProbe.env == r.env, HealthProbe.at >= at - RECENT_WINDOW,
                   HealthProbe.latency_ms.is_not(None))
            .order_by(HealthProbe.at.desc(), HealthProbe.id.desc())
            .limit(RECENT_PROBES)
        )).scalars().all()
        out[r.key] = P95(percentile(rows, 95), len(rows), r.slo_ms)
    return out


async def prune(session: AsyncSession, *, at: datetime) -> None:
    await session.execute(delete(HealthProbe).where(HealthProbe.at < at - KEEP_FOR))
