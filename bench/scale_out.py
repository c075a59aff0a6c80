"""Benchmark: cadences kept at 100 open incidents, deployed as the Procfile does (issue 16 item 5).

    python bench/scale_out.py [--incidents 100] [--seconds 60] [--serve 2] [--workers 3] [--json out.json]

Real subprocesses on one throwaway PostgreSQL server (tests/support/postgres.py; fsync off, as the
test run has it): `--serve` × `revops serve` and `--workers` × `revops worker`, with a 1 s tick
(REVOPS_TICK) and the outbox's 1 post/s per channel (REVOPS_POST_INTERVAL). N open, acknowledged P1
incidents, each in its own channel, with a 3 s revenue-team update and a 5 s engineering update
(settings; the no-update reminder follows the revenue cadence, so about 0.87 posts/s fall due per
channel, 87/s in all at 100). A fake Slack on loopback (tests/support/fake_slack.py) enforces, like
Slack, 1 post/s per channel after a burst of 3, answering 429 with Retry-After past it.

Printed (and written with --json): the slots that fell due in the run and how many posted within
one tick of their time — measured from the slot, and from the moment the channel's pace first
allowed the post (the previous post in the channel + 1 s: two slots of one channel that fall due
together cannot both post within a second, whatever the scheduler does) — the catch-ups (runs
that covered slots missed), duplicates (a slot run twice, or one post reaching Slack twice), the
429s, the most posts a channel got in any one second, and each worker's tick (p50, p99, max) and
how late after its slot a job was claimed, from the workers' own log lines at their stop.
Figures, not assertions: the machine may be shared (say so when quoting them). With
SCALE_OUT_PROFILE=<dir> every revops process runs under cProfile and writes <dir>/<name>.prof
(serve0, worker0, …) when it stops: where the CPU per post goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bot.app import build_services  # noqa: E402
from bot.clock import Clock  # noqa: E402
from bot.incidents import service as incidents  # noqa: E402
from bot.incidents.models import Incident, TimelineEntry  # noqa: E402
from bot.models import OutgoingMessage, ScheduledJob, WorkerHeartbeat  # noqa: E402
from tests.support.fake_slack import FakeSlack  # noqa: E402
from tests.support.harness import BOT_TOKEN, SIGNING_SECRET, make_settings  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

CADENCES = {"revenue_update": 3.0, "engineering_update": 5.0, "update_reminder": 3.0}
TICK = 1.0
PACE = 1.0
CONFIG = """
[severity.P1]
ack                = "15m"
resolve            = "1h"
revenue_update     = "3s"
engineering_update = "5s"
"""
TICK_LINE = re.compile(r"stopped after (\d+) ticks \(tick p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms; "
                       r"jobs claimed ([\d.]+) ms after their slot at p50, ([\d.]+) ms at p99\)")


def _env(settings, slack: FakeSlack) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REVOPS_", "SLACK_", "STRIPE_", "DATABASE_"))}
    clean.update({
        "DATABASE_URL": settings.env.database_url, "REVOPS_CONFIG": str(settings.config_path),
        "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "SLACK_API_URL": slack.api_url,
        "REVOPS_TICK": f"{TICK:g}s", "REVOPS_POST_INTERVAL": f"{PACE:g}s", "REVOPS_LOG_LEVEL": "INFO",
        "REVOPS_BASE_URL": "http://revops.bench", "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    })
    return clean


def _start(env: dict, tmp: Path, name: str, args: list[str]) -> subprocess.Popen:
    log = open(tmp / f"{name}.log", "w")
    profile = os.environ.get("SCALE_OUT_PROFILE")  # a directory: each process under cProfile, NAME.prof there
    wrap = ["-m", "cProfile", "-o", str(Path(profile) / f"{name}.prof")] if profile else []
    return subprocess.Popen([sys.executable, *wrap, "-m", "bot", *args], env=env, cwd=tmp, stdout=log,
                            stderr=subprocess.STDOUT)


async def _up(services, ports: list[int], workers: int, timeout: float = 300) -> None:
    """Every serve answers /healthz and every worker has beaten its heartbeat (five processes
    importing at once on a loaded 2-core machine may take minutes)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        for port in ports:
            while True:
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"revops serve on port {port} did not come up")
                await asyncio.sleep(0.2)
    while True:
        async with services.db.transaction() as s:
            beating = (await s.execute(select(func.count()).select_from(WorkerHeartbeat))).scalar()
        if beating >= workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{beating} of {workers} workers came up")
        await asyncio.sleep(0.2)


async def _seed(services, count: int) -> dict[int, str]:
    """N open, acknowledged P1 incidents, each in its own channel (declared one after another, so
    their slots fall across the second as real declarations would)."""
    channels = {}
    for i in range(count):
        async with services.db.transaction() as session:
            now = services.clock.now()
            incident = await incidents.declare(
                session, services.settings, channel=f"CSCALE{i:04d}", actor="U0RESPONDER", severity="P1",
                stage="checkout", summary=f"scale-out incident {i}", figures={}, now=now)
            await incidents.acknowledge(session, incident, actor="U0RESPONDER", now=now)
            channels[incident.id] = incident.channel
    return channels


def _stop(processes: list[subprocess.Popen], timeout: float = 30) -> list[int]:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in processes:
        try:
            codes.append(p.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def _ts(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def analyse(jobs, entries, posts, attempts, end: float, tail: float) -> dict:
    """jobs: (id, key, kind, incident, channel, first_due, every); entries: the timeline's
    auto-posts (incident, job kind, run time, catch-up, outbox id); posts: Slack's accepted
    chat.postMessage calls (channel, time, outbox id); attempts: every chat.postMessage call."""
    posted_at: dict[int, list[float]] = defaultdict(list)
    by_channel: dict[str, list[float]] = defaultdict(list)
    for channel, at, outbox_id in posts:
        by_channel[channel].append(at)
        if outbox_id is not None:
            posted_at[outbox_id].append(at)
    for times in by_channel.values():
        times.sort()
    runs: dict[tuple[int, str], list[tuple[float, int, int | None]]] = defaultdict(list)
    for incident_id, kind, at, catch_up, outbox_id in entries:
        runs[(incident_id, kind)].append((at, catch_up, outbox_id))
    slots_due = on_time = on_pace = catch_up_runs = caught_up = slot_doubles = 0
    lateness: list[float] = []
    for _, _, kind, incident_id, channel, first, every in jobs:
        covered: Counter = Counter()
        own: dict[int, float | None] = {}
        for at, missed, outbox_id in runs.get((incident_id, kind), []):
            last = int((at - first) // every + 1e-9)  # the latest slot at or before the run
            for k in range(last - missed, last + 1):
                covered[k] += 1
            if missed:
                catch_up_runs += 1
                caught_up += missed
            sent = posted_at.get(outbox_id) if outbox_id is not None else None
            own[last] = min(sent) if sent else None
        slot_doubles += sum(n - 1 for n in covered.values() if n > 1)
        channel_posts = by_channel.get(channel, [])
        k = 0
        while first + k * every <= end - tail:
            slot = first + k * every
            slots_due += 1
            sent = own.get(k)
            if sent is not None:
                lateness.append(sent - slot)
                if sent - slot <= TICK:
                    on_time += 1
                earlier = [t for t in channel_posts if t < sent]
                allowed = max(slot, earlier[-1] + PACE) if earlier else slot
                if sent - allowed <= TICK:
                    on_pace += 1
            k += 1
    post_doubles = sum(len(times) - 1 for times in posted_at.values() if len(times) > 1)
    max_per_second = 0
    min_gap = None
    for times in by_channel.values():
        j = 0
        for i, t in enumerate(times):
            while times[j] <= t - 1.0:
                j += 1
            max_per_second = max(max_per_second, i - j + 1)
        gaps = [b - a for a, b in zip(times, times[1:])]
        if gaps:
            min_gap = min(gaps) if min_gap is None else min(min_gap, min(gaps))
    ordered = sorted(lateness)

    def pct(q: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None

    return {
        "slots_due": slots_due, "on_time": on_time, "on_time_pct": round(100 * on_time / max(slots_due, 1), 1),
        "on_pace": on_pace, "on_pace_pct": round(100 * on_pace / max(slots_due, 1), 1),
        "catch_up_runs": catch_up_runs, "slots_caught_up": caught_up,
        "duplicates": slot_doubles + post_doubles, "slot_doubles": slot_doubles, "post_doubles": post_doubles,
        "posts": len(posts), "attempts": attempts, "http_429": attempts - len(posts),
        "max_posts_per_channel_per_s": max_per_second, "min_gap_s": round(min_gap, 3) if min_gap is not None else None,
        "lateness_p50_s": pct(0.5), "lateness_p95_s": pct(0.95), "lateness_p99_s": pct(0.99),
    }


async def run(count: int, seconds: float, serves: int, workers: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="revops-scale-out-"))
    pg = PostgresServer().start()
    slack = FakeSlack().start()
    slack.channel_rate, slack.channel_burst = PACE, 3
    processes: list[subprocess.Popen] = []
    load_before = os.getloadavg()
    try:
        url = await pg.create_database()
        settings = make_settings(tmp, url, slack.api_url, CONFIG)
        services = build_services(settings, Clock())
        await services.db.upgrade()
        env = _env(settings, slack)
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        ports = [free_port() for _ in range(serves)]
        processes += [_start(env, tmp, f"serve{i}", ["serve", "--port", str(port)]) for i, port in enumerate(ports)]
        processes += [_start(env, tmp, f"worker{i}", ["worker"]) for i in range(workers)]
        await _up(services, ports, workers)
        seeding = time.time()
        channels = await _seed(services, count)
        started = time.time()
        await asyncio.sleep(seconds)
        end = time.time()
        codes = _stop(processes)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        async with services.db.transaction() as s:
            jobs = [(j.id, j.key, j.kind, j.incident_id, channels.get(j.incident_id), None, j.every_seconds)
                    for j in (await s.execute(select(ScheduledJob).where(ScheduledJob.kind.in_(list(CADENCES))))).scalars()]
            timeline = (await s.execute(select(TimelineEntry).where(TimelineEntry.kind == "auto_post"))).scalars().all()
            entries = [(e.incident_id, (e.data or {}).get("job"), _ts(e.at), int((e.data or {}).get("catch_up") or 0),
                        (e.data or {}).get("message_id")) for e in timeline]
            statuses = dict((await s.execute(select(OutgoingMessage.status, func.count())
                                             .group_by(OutgoingMessage.status))).all())
            failed = statuses.get("failed", 0)
            declared = {i.id: _ts(i.declared_at) for i in (await s.execute(
                select(Incident).where(Incident.id.in_(list(channels))))).scalars()}
        await services.db.dispose()
    finally:
        _stop(processes)
        slack.stop()
        pg.stop()
    # the first slot of each cadence job: one interval after its incident was declared
    jobs = [(i, k, kind, inc, ch, declared[inc] + every, every) for i, k, kind, inc, ch, _, every in jobs]
    calls = [c for c in slack.calls_of("chat.postMessage") if str(c.params.get("channel", "")).startswith("CSCALE")]
    posts = []
    for c in calls:
        if c.ts is None:
            continue
        meta = c.params.get("metadata")
        meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
        posts.append((c.params.get("channel"), c.at, (meta.get("event_payload") or {}).get("outbox_id")))
    result = analyse(jobs, entries, posts, len(calls), end, tail=3.0)
    ticks = []
    for i in range(workers):
        found = TICK_LINE.search((tmp / f"worker{i}.log").read_text())
        if found:
            ticks.append({"ticks": int(found[1]), "p50_ms": float(found[2]), "p99_ms": float(found[3]),
                          "max_ms": float(found[4]), "claim_lag_p50_ms": float(found[5]),
                          "claim_lag_p99_ms": float(found[6])})
    result.update({
        "incidents": count, "serve": serves, "workers": workers, "seconds": round(end - started, 1),
        "seed_seconds": round(started - seeding, 1), "cadences_s": CADENCES, "tick_s": TICK, "pace_s": PACE,
        "slack_burst": 3, "failed_posts": failed, "outbox": statuses,
        "slack_calls": dict(Counter(c.method for c in slack.calls)), "exit_codes": codes, "workers_ticks": ticks,
        "tick_p99_ms": max((t["p99_ms"] for t in ticks), default=None),
        "tick_p50_ms": round(statistics.median(t["p50_ms"] for t in ticks), 1) if ticks else None,
        "claim_lag_p99_ms": max((t["claim_lag_p99_ms"] for t in ticks), default=None),
        "posts_per_s": round(result["posts"] / max(end - seeding, 1e-9), 1),
        "revops_cpu_seconds": round(cpu, 1), "revops_cpu_share": round(cpu / max(end - seeding, 1e-9) / (os.cpu_count() or 1), 2),
        "load_average": [round(x, 2) for x in load_before], "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "logs": str(tmp),
    })
    print(f"{count} open P1 incidents (3 s / 5 s cadences), {serves} serve + {workers} workers on PostgreSQL, "
          f"{result['seconds']:.0f} s, Slack 1 post/s per channel after a burst of 3:\n"
          f"  slots due {result['slots_due']}: posted within one tick of their slot {result['on_time']} "
          f"({result['on_time_pct']} %), within one tick of the channel's pace {result['on_pace']} "
          f"({result['on_pace_pct']} %); lateness p50 {result['lateness_p50_s']} s, p99 {result['lateness_p99_s']} s\n"
          f"  catch-ups {result['catch_up_runs']} ({result['slots_caught_up']} slots), duplicates "
          f"{result['duplicates']}, 429s {result['http_429']}, failed posts {failed}, max posts per channel per "
          f"second {result['max_posts_per_channel_per_s']} (closest two {result['min_gap_s']} s)\n"
          f"  {result['posts']} posts ({result['posts_per_s']}/s); tick p50 {result['tick_p50_ms']} ms, p99 "
          f"{result['tick_p99_ms']} ms (worst worker); jobs claimed up to {result['claim_lag_p99_ms']} ms after "
          f"their slot (p99)\n  the revops processes used {result['revops_cpu_seconds']} CPU seconds "
          f"({100 * result['revops_cpu_share']:.0f} % of the machine's {os.cpu_count()} CPUs over the run); load "
          f"average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; exit codes {codes}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--serve", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    result = asyncio.run(run(args.incidents, args.seconds, args.serve, args.workers))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    raise SystemExit(1 if result["duplicates"] else 0)


if __name__ == "__main__":
    main()
