"""Benchmark: acknowledgement latency of signed `/revops` commands through uvicorn on loopback,
against a bare bolt AsyncApp on FastAPI whose /revops only acknowledges, measured in the same run.

    python bench/ack_latency.py [--db sqlite|postgresql|both] [--requests 400] [--concurrency 1,8,32]
                                [--json out.json]

Both servers run as `uvicorn` subprocesses on loopback with the same fake Slack Web API; the load
comes from this process (bench/loadgen.py: keep-alive connections, requests signed before the
clock starts, every connection warmed first). Prints p50/p99 per command and concurrency and
the ratio of revops' p99 to the floor's, against the target of SPEC §9: p99 <= 1.3x the floor at
c=1, <= 2.0x at c=8, and under 100 ms at c=32. Exits 1 when a row misses its target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import run_load  # noqa: E402
from tests.support.fake_slack import FakeSlack  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.slack_requests import sign, slash_body  # noqa: E402

SECRET = "bench-signing-secret-0123456789"
TOKEN = "xoxb-bench-token"
CHANNEL = "C0BENCH"
USER = "U0RESPONDER"
COMMANDS = ["help", "credits acct_bench", "incident status"]
TOML = f"""
[slack]
incident_channel = "{CHANNEL}"
[roles]
admin = ["U0ADMIN"]
approver = ["U0APPROVER", "U0APPROVER2"]
responder = ["{USER}"]
"""


def env_for(tmp: Path, slack: FakeSlack, database_url: str | None = None) -> dict[str, str]:
    config = tmp / "revops.toml"
    config.write_text(TOML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STRIPE_", "REVOPS_", "DATABASE"))}
    env.update(
        DATABASE_URL=database_url or f"sqlite+aiosqlite:///{tmp}/bench.db",
        REVOPS_CONFIG=str(config),
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_API_URL=slack.api_url,
        REVOPS_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


def seed(env: dict[str, str]) -> None:
    """An account with some credits and an open incident in the benchmark channel."""
    script = f"""
import asyncio
from bot.db import Database
from bot.clock import Clock
async def main():
    db = Database({env['DATABASE_URL']!r})
    await db.upgrade()
    from bot.billing import ledger
    now = Clock().now()
    async with db.transaction() as s:
        await ledger.ensure_account(s, "acct_bench", email="bench@example.com", at=now)
        await ledger.append_entry(s, account_id="acct_bench", delta=250, kind="purchase", reason="bench",
                                  actor="bench", idempotency_key="bench:1", at=now)
    await db.dispose()
asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "bot", "exec", "incident declare P2 checkout bench incident",
                    "--as", USER, "--channel", CHANNEL], env=env, check=True, cwd=ROOT, capture_output=True)


def start_server(app: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.post(f"{url}/slack/events", timeout=1).status_code in (401, 403, 200, 404):
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{app} did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")


async def measure(url: str, text: str, total: int, concurrency: int, slack: FakeSlack) -> list[float]:
    host, port = url.removeprefix("http://").split(":")

    def make_request(_i: int) -> tuple[bytes, dict[str, str]]:
        body = slash_body(text, user=USER, channel=CHANNEL, response_url=slack.response_url("bench"))
        return body.encode(), sign(SECRET, body)

    return await run_load(host, int(port), "/slack/events", make_request, total=total, concurrency=concurrency)


def target(concurrency: int) -> tuple[str, float | None, float | None]:
    """SPEC §9 for one concurrency: (words, the highest p99 ratio, the highest p99 in ms)."""
    if concurrency <= 1:
        return "<= 1.3x", 1.3, None
    if concurrency <= 8:
        return "<= 2.0x", 2.0, None
    return "< 100 ms", None, 100.0


def meets(row: dict) -> bool:
    _, max_ratio, max_ms = target(row["concurrency"])
    return ((max_ratio is None or row["p99_ratio"] <= max_ratio)
            and (max_ms is None or row["revops_p99_ms"] < max_ms))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(requests: int, levels: list[int], db: str = "sqlite") -> dict:
    slack = FakeSlack().start()
    tmp = Path(tempfile.mkdtemp(prefix="revops-ack-bench-"))
    pg = None
    database_url = None
    if db == "postgresql":
        from tests.support.postgres import PostgresServer

        pg = PostgresServer().start()
        database_url = asyncio.run(pg.create_database())
    env = env_for(tmp, slack, database_url)
    seed(env)
    servers = {}
    try:
        servers["revops"] = start_server("bot.asgi:app", env)
        servers["bare-bolt"] = start_server("bench.bare_bolt_app:app", env)
        # The same floor answering when its listener returns, as revops does (see bare_bolt_app.py).
        servers["bolt-immediate"] = start_server("bench.bare_bolt_app:app",
                                                 {**env, "BARE_BOLT_PROCESS_BEFORE_RESPONSE": "1"})
        rows = []
        for text in COMMANDS:
            for concurrency in levels:
                figures = {}
                for name, (_, url) in servers.items():
                    lat = asyncio.run(measure(url, text, requests, concurrency, slack))
                    figures[name] = {"p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
                                     "mean_ms": statistics.mean(lat) * 1000}
                ratio = figures["revops"]["p99_ms"] / figures["bare-bolt"]["p99_ms"]
                rows.append({"db": db, "command": text, "concurrency": concurrency, **{
                    f"{name}_{k}": round(v, 2) for name, f in figures.items() for k, v in f.items()},
                    "p99_ratio": round(ratio, 2),
                    "p99_ratio_immediate": round(figures["revops"]["p99_ms"] / figures["bolt-immediate"]["p99_ms"], 2),
                    "target": target(concurrency)[0]})
                rows[-1]["met"] = meets(rows[-1])
                print(f"[{db}] {text:<18} c={concurrency:<3} revops p50 {figures['revops']['p50_ms']:6.1f} ms "
                      f"p99 {figures['revops']['p99_ms']:6.1f} ms | bare bolt p50 {figures['bare-bolt']['p50_ms']:6.1f} ms "
                      f"p99 {figures['bare-bolt']['p99_ms']:6.1f} ms | p99 ratio {ratio:4.2f}x "
                      f"({rows[-1]['p99_ratio_immediate']:4.2f}x bolt answering at once) | target {rows[-1]['target']}: "
                      f"{'met' if rows[-1]['met'] else 'MISSED'}", flush=True)
        return {"requests": requests, "rows": rows,
                "target": "p99 <= 1.3x bare bolt at c=1, <= 2.0x at c=8, < 100 ms at c=32"}
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        slack.stop()
        if pg is not None:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--json")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    result: dict = {"rows": []}
    for db in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        one = run(args.requests, levels, db)
        result.update({k: v for k, v in one.items() if k != "rows"})
        result["rows"] += one["rows"]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    missed = [r for r in result["rows"] if not r["met"]]
    print(f"{len(result['rows']) - len(missed)} of {len(result['rows'])} rows meet their target")
    raise SystemExit(1 if missed else 0)


if __name__ == "__main__":
    main()
