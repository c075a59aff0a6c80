"""Benchmark: resident memory of `revops serve` after N signed requests (default 10,000).

    python bench/memory.py [--requests 10000] [--concurrency 8] [--json out.json]

Starts `revops serve` on loopback (SQLite, a fake Slack Web API), reads its resident set size
(VmRSS) after start-up, after a warm-up, and after the requests — a mix of `/revops help`,
`/revops credits <account>`, `/revops incident status`, denied commands and bad input — and
prints the growth. A leak shows as growth that keeps rising with N.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ack_latency import CHANNEL, SECRET, USER, env_for, seed, start_server  # noqa: E402
from tests.support.fake_slack import FakeSlack  # noqa: E402
from tests.support.slack_requests import sign, slash_body  # noqa: E402

MIX = [(USER, "help"), (USER, "credits acct_bench"), (USER, "incident status"), ("U0VIEWER", "dryrun on"),
       (USER, "frobnicate"), (USER, "grant acct_bench lots")]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def fire(url: str, total: int, concurrency: int, slack: FakeSlack) -> None:
    mix = itertools.cycle(MIX)
    remaining = total
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def worker():
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                user, text = next(mix)
                body = slash_body(text, user=user, channel=CHANNEL, response_url=slack.response_url("mem"))
                r = await client.post("/slack/events", content=body, headers=sign(SECRET, body))
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def run(requests: int, concurrency: int) -> dict:
    slack = FakeSlack().start()
    tmp = Path(tempfile.mkdtemp(prefix="revops-mem-bench-"))
    env = env_for(tmp, slack)
    seed(env)
    proc, url = start_server("bot.asgi:app", env)
    try:
        start = rss_mb(proc.pid)
        asyncio.run(fire(url, 500, concurrency, slack))
        warm = rss_mb(proc.pid)
        t = time.perf_counter()
        asyncio.run(fire(url, requests, concurrency, slack))
        elapsed = time.perf_counter() - t
        end = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        slack.stop()
    result = {"requests": requests, "rss_start_mb": round(start, 1), "rss_after_warmup_mb": round(warm, 1),
              "rss_after_mb": round(end, 1), "growth_after_warmup_mb": round(end - warm, 1),
              "requests_per_s": round(requests / elapsed, 1)}
    print(f"revops serve RSS: {start:.1f} MB at start, {warm:.1f} MB after 500 requests, {end:.1f} MB after "
          f"{requests} more ({end - warm:+.1f} MB); {requests / elapsed:.0f} req/s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    result = run(args.requests, args.concurrency)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
