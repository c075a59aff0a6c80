"""Benchmark: health probes fan out concurrently.

50 services on loopback, each answering its /health in 200 ms. One probe round
(client set-up included) is timed against the slowest single probe of the same
round; the target is wall / slowest <= 1.3 (sequential probing would be ~50x).

    python bench/health_fanout.py [--services 50] [--delay 0.2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from bot.health.probes import probe_services  # noqa: E402
from bot.settings import ServiceCheck  # noqa: E402

TARGET = 1.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowServices:
    """One aiohttp server, in its own thread and loop, with /svc/{n}/health answering after `delay`."""

    def __init__(self, delay: float):
        self.delay = delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def health(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)
        return web.json_response({"status": "ok", "version": f"1.0.{request.match_info['n']}"})

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/svc/{n}/health", self.health)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port, backlog=512).start())
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> "SlowServices":
        self.thread.start()
        self.ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def one_round(checks: list[ServiceCheck]) -> tuple[float, float, float, int]:
    started = time.perf_counter()
    results = await probe_services(checks)
    wall = time.perf_counter() - started
    latencies = [r.latency_ms / 1000 for r in results if r.latency_ms is not None]
    answered = sum(1 for r in results if r.code == 200)
    return wall, max(latencies), sum(latencies), answered


async def main(args) -> int:
    server = SlowServices(args.delay).start()
    checks = [ServiceCheck(name=f"svc{i}", env="production", url=f"http://127.0.0.1:{server.port}/svc/{i}/health",
                           timeout=timedelta(seconds=5), p95_slo=timedelta(milliseconds=150))
              for i in range(args.services)]
    try:
        await one_round(checks)  # warm-up (imports, TLS context)
        ratios, walls = [], []
        print(f"health_fanout: {args.services} services answering in {args.delay * 1000:.0f} ms, "
              f"{args.rounds} rounds")
        for n in range(1, args.rounds + 1):
            wall, slowest, total, answered = await one_round(checks)
            ratio = wall / slowest
            ratios.append(ratio)
            walls.append(wall)
            print(f"  round {n}: wall {wall * 1000:7.1f} ms | slowest probe {slowest * 1000:7.1f} ms | "
                  f"ratio {ratio:.3f} | sum of probes {total:6.2f} s (sequential) | {answered}/{len(checks)} answered")
            if answered != len(checks):
                print("  not every service answered; the figures are not meaningful")
                return 1
    finally:
        server.stop()
    median = statistics.median(ratios)
    verdict = "OK" if median <= TARGET else "OVER TARGET"
    print(f"median ratio wall/slowest: {median:.3f} (best {min(ratios):.3f}, worst {max(ratios):.3f}); "
          f"target <= {TARGET}: {verdict}")
    print(f"(for reference: median wall / the services' own {args.delay * 1000:.0f} ms = "
          f"{statistics.median(walls) / args.delay:.2f}; server and prober share this process)")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({
            "services": args.services, "delay_ms": args.delay * 1000, "rounds": args.rounds,
            "median_ratio": round(median, 3), "best_ratio": round(min(ratios), 3), "worst_ratio": round(max(ratios), 3),
            "median_wall_ms": round(statistics.median(walls) * 1000, 1), "target": TARGET}, indent=2))
    return 0 if median <= TARGET else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
