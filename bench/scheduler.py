"""Benchmark: the scheduler with 1,000 open incidents and three workers on PostgreSQL.

    python bench/scheduler.py [--incidents 1000] [--workers 3] [--json out.json]

A throwaway PostgreSQL server (tests/support/postgres.py) gets N open, acknowledged P1 incidents
whose revenue-team and engineering updates fall due at once (an injectable clock jumps past
their cadence). Three workers — each with its own engine and connection pool, as three machines
would have — tick concurrently until nothing is due. Prints the time per tick, posts per second
and the number of duplicate posts (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bot.clock import FakeClock  # noqa: E402
from bot.incidents import service as incidents  # noqa: E402
from bot.models import OutgoingMessage  # noqa: E402
from bot.scheduler import Scheduler  # noqa: E402
from bot.app import build_services  # noqa: E402
from tests.support.harness import make_settings  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402


async def seed(services, count: int) -> None:
    now = services.clock.now()
    batch = 100
    for start in range(0, count, batch):
        async with services.db.transaction() as session:
            for i in range(start, min(start + batch, count)):
                incident = await incidents.declare(
                    session, services.settings, channel=f"CBENCH{i:05d}", actor="U0RESPONDER", severity="P1",
                    stage="checkout", summary=f"bench incident {i}", figures={}, now=now)
                await incidents.acknowledge(session, incident, actor="U0RESPONDER", now=now)


async def worker_loop(services, scheduler: Scheduler, ticks: list[float]) -> int:
    ran = 0
    while True:
        started = time.perf_counter()
        n = len(await scheduler.run_due(services, limit=100))
        ticks.append(time.perf_counter() - started)
        ran += n
        if n == 0:
            return ran


async def run(count: int, workers: int) -> dict:
    pg = PostgresServer().start()
    try:
        url = await pg.create_database()
        tmp = Path(tempfile.mkdtemp(prefix="revops-sched-bench-"))
        settings = make_settings(tmp, url, "http://127.0.0.1:9/api/")
        clock = FakeClock()
        first = build_services(settings, clock)
        await first.db.upgrade()
        t = time.perf_counter()
        await seed(first, count)
        seeded = time.perf_counter() - t
        fleet = [first] + [build_services(settings, clock) for _ in range(workers - 1)]
        clock.advance(timedelta(hours=1, seconds=1))  # revenue (30m) and engineering (1h) updates are due
        ticks: list[float] = []
        started = time.perf_counter()
        schedulers = [Scheduler(s.scheduler.kinds.values(), f"w{i}") for i, s in enumerate(fleet)]
        ran = await asyncio.gather(*(worker_loop(s, sch, ticks) for s, sch in zip(fleet, schedulers)))
        elapsed = time.perf_counter() - started
        async with first.db.transaction() as session:
            texts = [json.dumps(r) for r in (await session.execute(select(OutgoingMessage.reply))).scalars()]
        for s in fleet:
            await s.db.dispose()
    finally:
        pg.stop()
    duplicates = sum(n - 1 for n in Counter(texts).values() if n > 1)
    posts = len(texts)
    result = {
        "incidents": count, "workers": workers, "jobs_run": sum(ran), "posts": posts,
        "duplicates": duplicates, "seconds": round(elapsed, 2), "posts_per_s": round(posts / elapsed, 1),
        "tick_p50_ms": round(statistics.median(ticks) * 1000, 1),
        "tick_max_ms": round(max(ticks) * 1000, 1), "ticks": len(ticks), "seed_seconds": round(seeded, 1),
    }
    print(f"{count} open incidents, {workers} workers on PostgreSQL: {sum(ran)} jobs run, {posts} posts in "
          f"{elapsed:.1f} s ({posts / elapsed:.0f} posts/s); tick (up to 100 jobs) p50 "
          f"{result['tick_p50_ms']} ms, max {result['tick_max_ms']} ms; duplicates: {duplicates}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    result = asyncio.run(run(args.incidents, args.workers))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    raise SystemExit(1 if result["duplicates"] else 0)


if __name__ == "__main__":
    main()
