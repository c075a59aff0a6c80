"""The worker: runs the scheduler (every periodic job: incident cadences and escalation,
grant expiry, health probes, the daily reconcile), delivers pending posts, and says it is alive.

There is one job system (bot/scheduler.py): jobs are rows claimed in the database, so
any number of workers can run at once and a restart resumes where the last one stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from sqlalchemy import select

from .models import WorkerHeartbeat
from .outbox import Deliverer
from .services import Services

log = logging.getLogger("revops.worker")


class Worker:
    def __init__(self, services: Services, deliverer: Deliverer):
        self.services = services
        self.deliverer = deliverer
        self.scheduler = services.scheduler
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self._stop = asyncio.Event()

    async def heartbeat(self) -> None:
        async with self.services.db.transaction() as session:
            row = (await session.execute(
                select(WorkerHeartbeat).where(WorkerHeartbeat.name == self.name))).scalar_one_or_none()
            now = self.services.clock.now()
            if row is None:
                session.add(WorkerHeartbeat(name=self.name, beat_at=now))
            else:
                row.beat_at = now

    async def tick(self) -> list[str]:
        """One round: heartbeat, the jobs due now, then the posts they queued. Returns the keys run."""
        await self.heartbeat()
        ran = await self.scheduler.run_due(self.services)
        await self.deliverer.deliver_due()
        return ran

    async def drain(self) -> list[str]:
        """Like `tick`, but runs jobs until none is due now (what tests and `--once` wait on)."""
        await self.heartbeat()
        ran = await self.scheduler.drain(self.services)
        await self.deliverer.deliver_due()
        return ran

    def stop(self) -> None:
        """Finish the tick in progress and return from `run_forever` (SIGTERM); no new claims."""
        self._stop.set()

    async def run_forever(self) -> None:
        every = self.services.settings.env.revops_tick.total_seconds()
        log.info("worker %s started (tick %ss; jobs: %s)", self.name, every, ", ".join(self.scheduler.kinds) or "none")
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("worker tick failed")
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=every)
            except asyncio.TimeoutError:
                pass
        log.info("worker %s stopped", self.name)
