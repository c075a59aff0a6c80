"""The worker: delivers pending posts, runs periodic jobs, and says it is alive.

Jobs are added by the families that need them (the incident scheduler, the
grant expiry sweep, health probes); every job must be safe to run on several
machines at once (claims are conditional updates).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Awaitable, Callable

from sqlalchemy import select

from .models import WorkerHeartbeat
from .outbox import Deliverer
from .services import Services

log = logging.getLogger("revops.worker")


@dataclass
class PeriodicJob:
    name: str
    every: timedelta
    run: Callable[[Services], Awaitable[None]]


class Worker:
    def __init__(self, services: Services, deliverer: Deliverer, jobs: list[PeriodicJob] | None = None):
        self.services = services
        self.deliverer = deliverer
        if jobs is None:
            from .jobs import periodic_jobs

            jobs = periodic_jobs(services.settings)
        self.jobs = jobs
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self._last_run: dict[str, float] = {}

    async def heartbeat(self) -> None:
        async with self.services.db.transaction() as session:
            row = (await session.execute(
                select(WorkerHeartbeat).where(WorkerHeartbeat.name == self.name))).scalar_one_or_none()
            now = self.services.clock.now()
            if row is None:
                session.add(WorkerHeartbeat(name=self.name, beat_at=now))
            else:
                row.beat_at = now

    async def tick(self) -> None:
        await self.heartbeat()
        loop_now = asyncio.get_running_loop().time()
        for job in self.jobs:
            last = self._last_run.get(job.name)
            if last is not None and loop_now - last < job.every.total_seconds():
                continue
            self._last_run[job.name] = loop_now
            try:
                await job.run(self.services)
            except Exception:
                log.exception("job %s failed", job.name)
        await self.deliverer.deliver_due()

    async def run_forever(self) -> None:
        every = self.services.settings.env.revops_tick.total_seconds()
        log.info("worker %s started (tick %ss)", self.name, every)
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("worker tick failed")
            await asyncio.sleep(every)
