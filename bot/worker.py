"""The worker: runs the scheduler (every periodic job: incident cadences and escalation,
grant expiry, health probes, the daily reconcile), delivers pending posts, and says it is alive.

There is one job system (bot/scheduler.py): jobs are rows claimed in the database, so
any number of workers can run at once and a restart resumes where the last one stopped.

`run_forever` keeps a steady tick (`REVOPS_TICK`, start to start): each tick beats the heartbeat
and claims the jobs due now in one batch, which run beside the tick (bounded); a claim that filled
the worker's room is followed by another as soon as half of it is free. Posts are delivered by
the outbox's own loop beside both (paced per channel across processes, bot/outbox.py), woken as
soon as a job has queued one. So neither a slow job nor a paced channel stretches the tick.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import statistics
import time

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
        self.tick_seconds: list[float] = []  # how long each tick of `run_forever` took (the last 1,000)
        self.ticks = 0

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
        delivering = asyncio.create_task(self.deliverer.run(), name="outbox")
        stop = asyncio.create_task(self._stop.wait())
        try:
            next_tick = time.monotonic()
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    await self.heartbeat()
                    await self.scheduler.start_due(self.services)
                except Exception:
                    log.exception("worker tick failed")
                self._timed(time.monotonic() - started)
                next_tick = max(next_tick + every, time.monotonic())  # start to start; a late tick is not made up
                while not self._stop.is_set() and time.monotonic() < next_tick:
                    room = asyncio.create_task(self.scheduler.room.wait())
                    await asyncio.wait({stop, room}, timeout=next_tick - time.monotonic(),
                                       return_when=asyncio.FIRST_COMPLETED)
                    room.cancel()
                    if self.scheduler.room.is_set() and not self._stop.is_set():
                        try:  # a backlog: claim more now that there is room, not at the next tick
                            await self.scheduler.start_due(self.services)
                        except Exception:
                            log.exception("worker claim failed")
        finally:
            stop.cancel()
            # No new claims. The jobs in flight finish (the caller bounds the wait by the shutdown
            # grace); the claims of those not started are given back; the outbox loop is stopped by
            # the caller's `deliverer.stop` or here.
            grace = self.services.settings.env.revops_shutdown_grace.total_seconds()
            if not await self.scheduler.wait_running(grace):
                log.warning("scheduled jobs still running after %.0fs; their claims lapse", grace)
            try:
                await self.scheduler.release_claims(self.services)
            except Exception:
                log.exception("could not release the scheduler's claims")
            if not delivering.done():
                await self.deliverer.stop(grace)
            await asyncio.gather(delivering, return_exceptions=True)
        log.info("worker %s stopped after %d ticks (%s)", self.name, self.ticks, self.tick_summary())

    def _timed(self, seconds: float) -> None:
        self.ticks += 1
        self.tick_seconds.append(seconds)
        del self.tick_seconds[:-1000]

    def tick_summary(self) -> str:
        """The tick durations and claim lags of `run_forever`, in words (logged when it stops)."""
        def pct(values: list[float], q: float) -> str:
            if not values:
                return "-"
            ordered = sorted(values)
            return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f} ms"
        ticks, lags = self.tick_seconds, self.scheduler.claim_lag_seconds
        median = f"{statistics.median(ticks) * 1000:.1f} ms" if ticks else "-"
        return (f"tick p50 {median}, p99 {pct(ticks, 0.99)}, max {pct(ticks, 1.0)}; "
                f"jobs claimed {pct(lags, 0.5)} after their slot at p50, {pct(lags, 0.99)} at p99")
