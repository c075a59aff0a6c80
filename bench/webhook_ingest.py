"""Benchmark: Stripe webhook ingest through uvicorn on loopback, against a FastAPI endpoint that
only verifies the signature (the floor), run in the same process tree and measured in turns.

    python bench/webhook_ingest.py [--db sqlite|postgresql|both] [--events 3000] [--concurrency 8]
                                   [--rounds 3] [--plain]

Each round: distinct signed `customer.created` events (each stores the event, mirrors the
customer and creates its account) with 10 % duplicate deliveries mixed in, sent to the floor and
then to revops. The ratio is revops' requests per second over the floor's of the same round; the
median over the rounds is checked against SPEC §9's target (>= 0.5x) with 0 events lost and 0
applied twice, on durable storage, and the verdict printed (PASS / FAIL, and the exit status).

Durable, as in production: SQLite in WAL mode with `synchronous=FULL` and SQLite's automatic
checkpoints (bot/db.py's pragmas, read back from revops' own engine); PostgreSQL with `fsync`,
`synchronous_commit` and `full_page_writes` on (its throwaway server is started so: the test
run's turns them off). The settings in force are printed.

Concurrent deliveries share transactions in revops (group commit, bot/billing/batch.py): the
figure is the endpoint's, batching included. `--plain` measures the same endpoint with each
delivery in a transaction of its own (`events.store_alone`), which is what decided whether the
group commit stays.

The machine's other load moves both figures: the ratio of each round compares turns seconds
apart, and the load average is printed before and after.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "whsec_bench_0123456789abcdef"


class _OnePerDelivery:
    """--plain: what the app's group commit would be, each delivery in a transaction of its own."""

    def __init__(self, db, policy=None):
        self.db = db
        self.policy = policy

    async def submit(self, event, now):
        from bot.billing.events import store_alone

        return await store_alone(self.db, event, now, self.policy)

    async def aclose(self) -> None:
        pass


def _serve_revops(port: int, database_url: str, plain: bool, ready) -> None:
    import uvicorn

    from bot.settings import load_settings
    from bot.app import create_app
    from bot.billing import routes

    if plain:
        routes.WebhookGroupCommit = _OnePerDelivery  # this benchmark process only

    config = Path(tempfile.mkdtemp(prefix="revops-bench-")) / "revops.toml"
    config.write_text("")
    settings = load_settings(database_url=database_url, stripe_webhook_secret=SECRET, revops_config=str(config),
                             stripe_secret_key="sk_test_bench", stripe_api_base="http://127.0.0.1:9")
    app = create_app(settings, with_worker=False)
    ready.set()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _serve_baseline(port: int, ready) -> None:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from bot.billing.webhooks import SignatureError, verify_signature

    app = FastAPI()

    # No `from __future__ import annotations` in this file: FastAPI must see `Request` itself here
    # (a string annotation naming this local import cannot be resolved, and the endpoint would
    # answer 422 to every request without reading or verifying anything).
    @app.post("/webhooks/stripe")
    async def verify_only(request: Request):
        payload = await request.body()
        try:
            verify_signature(payload, request.headers.get("stripe-signature"), SECRET, now=time.time())
        except SignatureError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"received": True})

    ready.set()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _start(target, *args) -> tuple[multiprocessing.Process, int]:
    from tests.support.net import free_port

    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=target, args=(port, *args, ready), daemon=True)
    proc.start()
    ready.wait(60)
    _wait_http(port)
    return proc, port


def _wait_http(port: int, timeout: float = 60) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/webhooks/stripe", content=b"{}", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def make_bodies(n: int, duplicates: float, seed: int = 7) -> tuple[list[tuple[bytes, str]], int]:
    from bot.billing.webhooks import sign_payload

    rng = random.Random(seed)
    now = int(time.time())
    run = uuid.uuid4().hex[:8]
    distinct = []
    for i in range(n):
        event = {
            "id": f"evt_bench{run}{i:07d}", "object": "event", "api_version": "2024-06-20", "created": now,
            "livemode": False, "type": "customer.created",
            "data": {"object": {"id": f"cus_bench{run}{i:07d}", "object": "customer",
                                "email": f"user{i}@example.com", "name": f"Bench User {i}",
                                "metadata": {"user_id": f"acct_bench{run}{i:07d}"}}},
        }
        body = json.dumps(event).encode()
        distinct.append((body, sign_payload(SECRET, body, now)))
    extra = [rng.choice(distinct) for _ in range(int(n * duplicates))]
    # Each duplicate goes after its first delivery's position in a shuffled order, as retries do.
    requests = distinct + extra
    rng.shuffle(requests)
    return requests, len(extra)


async def _load(port: int, requests: list[tuple[bytes, str]], concurrency: int) -> dict:
    import httpx

    statuses: dict[str, int] = {}
    codes: dict[int, int] = {}
    latencies: list[float] = []
    queue = list(reversed(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:
        async def worker():
            while queue:
                body, signature = queue.pop()
                started = time.perf_counter()
                r = await client.post("/webhooks/stripe", content=body,
                                      headers={"Stripe-Signature": signature, "Content-Type": "application/json"})
                latencies.append(time.perf_counter() - started)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                status = r.json().get("status", "ok") if r.status_code == 200 else "error"
                statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(requests), "seconds": elapsed, "rps": len(requests) / elapsed, "codes": codes,
            "statuses": statuses, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]}


async def _verify(database_url: str, expected: int, prefix: str) -> dict:
    from sqlalchemy import func, select

    from bot.billing.models import Account, StripeCustomer, StripeEvent
    from bot.db import Database

    db = Database(database_url)
    try:
        async with db.transaction() as session:
            def count(model, like, *where):
                return session.execute(select(func.count()).select_from(model).where(model.id.like(like), *where))
            events = (await count(StripeEvent, f"evt_bench{prefix}%")).scalar_one()
            processed = (await count(StripeEvent, f"evt_bench{prefix}%", StripeEvent.status == "processed")).scalar_one()
            customers = (await count(StripeCustomer, f"cus_bench{prefix}%")).scalar_one()
            accounts = (await count(Account, f"acct_bench{prefix}%")).scalar_one()
    finally:
        await db.dispose()
    return {"events": events, "processed": processed, "customers": customers, "accounts": accounts,
            "lost": expected - min(events, processed, customers, accounts)}


async def _durability(database_url: str) -> tuple[bool, str]:
    """What revops' own engine runs with (bot/db.py's connections), and whether it is durable."""
    from sqlalchemy import text

    from bot.db import Database

    db = Database(database_url)
    try:
        async with db.engine.connect() as conn:
            async def value(sql: str):
                return (await conn.execute(text(sql))).scalar()
            if db.dialect == "sqlite":
                journal, sync, checkpoint = (await value("PRAGMA journal_mode"), await value("PRAGMA synchronous"),
                                             await value("PRAGMA wal_autocheckpoint"))
                names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
                durable = str(journal).lower() == "wal" and int(sync) >= 2 and int(checkpoint) > 0
                return durable, (f"journal_mode={journal}, synchronous={names.get(int(sync), sync)}, "
                                 f"wal_autocheckpoint={checkpoint} pages")
            fsync, commit, pages = (await value("SHOW fsync"), await value("SHOW synchronous_commit"),
                                    await value("SHOW full_page_writes"))
            durable = fsync == "on" and commit in ("on", "remote_write", "remote_apply") and pages == "on"
            return durable, f"fsync={fsync}, synchronous_commit={commit}, full_page_writes={pages}"
    finally:
        await db.dispose()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (aiosqlite's included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(pid: int, port: int, requests, concurrency: int) -> dict:
    """One load against one server, with the server process's CPU time per request."""
    before = _cpu_seconds(pid)
    figures = asyncio.run(_load(port, requests, concurrency))
    figures["cpu_ms_per_request"] = 1000 * (_cpu_seconds(pid) - before) / len(requests)
    return figures


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


TARGET = 0.5


def run_one(db: str, n: int, concurrency: int, duplicates: float, rounds: int, plain: bool) -> dict:
    pg = None
    workdir = tempfile.mkdtemp(prefix="revops-bench-")
    if db == "sqlite":
        database_url = f"sqlite+aiosqlite:///{workdir}/bench.db"
    else:
        from tests.support.postgres import PostgresServer

        pg = PostgresServer(durable=True).start()  # fsync and synchronous_commit on (the test run's are off)
        database_url = asyncio.run(pg.create_database())
    procs = []
    load_before = _load_average()
    try:
        baseline_proc, baseline_port = _start(_serve_baseline)
        procs.append(baseline_proc)
        revops_proc, revops_port = _start(_serve_revops, database_url, plain)
        procs.append(revops_proc)
        durable, settings = asyncio.run(_durability(database_url))

        # Warm both as the rounds will run them (every batch size's statements compiled and prepared).
        warm, _ = make_bodies(1000, duplicates)
        asyncio.run(_load(baseline_port, warm, concurrency))
        asyncio.run(_load(revops_port, warm, concurrency))

        turns = []
        for _ in range(rounds):
            requests, dup_count = make_bodies(n, duplicates)
            prefix = json.loads(requests[0][0])["id"][len("evt_bench"):len("evt_bench") + 8]
            baseline = _measured(baseline_proc.pid, baseline_port, requests, concurrency)
            ingest = _measured(revops_proc.pid, revops_port, requests, concurrency)
            check = asyncio.run(_verify(database_url, n, prefix))
            # Applied twice: more "processed" answers than events, or fewer duplicates answered than sent.
            check["doubled"] = max(0, ingest["statuses"].get("processed", 0) - n,
                                   dup_count - ingest["statuses"].get("duplicate", 0))
            check["floor_ok"] = baseline["codes"] == {200: len(requests)}
            check["all_200"] = ingest["codes"] == {200: len(requests)}
            turns.append({"baseline": baseline, "ingest": ingest, "check": check, "duplicates": dup_count,
                          "ratio": ingest["rps"] / baseline["rps"]})
        ratios = sorted(t["ratio"] for t in turns)
        median = turns[[t["ratio"] for t in turns].index(ratios[(len(ratios) - 1) // 2])]  # the lower, if even
        lost = sum(t["check"]["lost"] for t in turns)
        doubled = sum(t["check"]["doubled"] for t in turns)
        correct = all(t["check"]["floor_ok"] and t["check"]["all_200"] for t in turns) and lost == 0 and doubled == 0
        ok = correct and durable and median["ratio"] >= TARGET
        return {"db": db, "events": n, "duplicates": median["duplicates"], "concurrency": concurrency,
                "rounds": rounds, "group_commit": not plain, "durable": durable, "storage": settings,
                "baseline": median["baseline"], "ingest": median["ingest"], "ratio": median["ratio"],
                "ratios": [t["ratio"] for t in turns], "check": {**median["check"], "lost": lost, "doubled": doubled},
                "turns": turns, "correct": correct, "target": TARGET, "ok": ok,
                "load_average": {"before": load_before, "after": _load_average()}}
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(10)
        if pg is not None:
            pg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--events", type=int, default=3000, help="distinct events per round (default 3000)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duplicates", type=float, default=0.10, help="share of duplicate deliveries (0.10)")
    parser.add_argument("--rounds", type=int, default=3, help="floor-then-revops turns; the median ratio counts (3)")
    parser.add_argument("--plain", action="store_true",
                        help="each delivery in a transaction of its own instead of the group commit")
    args = parser.parse_args(argv)
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = []
    for db in dbs:
        r = run_one(db, args.events, args.concurrency, args.duplicates, args.rounds, args.plain)
        results.append(r)
        b, i, c = r["baseline"], r["ingest"], r["check"]
        path = "group commit" if r["group_commit"] else "one transaction per delivery (--plain)"
        print(f"[{db}] {r['events']} distinct events + {r['duplicates']} duplicates per round, {r['rounds']} rounds, "
              f"concurrency {r['concurrency']}, {path}")
        print(f"  storage: {r['storage']} ({'durable' if r['durable'] else 'NOT durable'})")
        print(f"  load average {r['load_average']['before']} before, {r['load_average']['after']} after")
        for n, t in enumerate(r["turns"], 1):
            print(f"  round {n}: verify-only {t['baseline']['rps']:6.0f} req/s, revops {t['ingest']['rps']:6.0f} req/s "
                  f"(p50 {t['ingest']['p50_ms']:.1f} ms, p99 {t['ingest']['p99_ms']:.1f} ms): {t['ratio']:.2f}x; "
                  f"server CPU per request {t['baseline']['cpu_ms_per_request']:.2f} / "
                  f"{t['ingest']['cpu_ms_per_request']:.2f} ms")
        print(f"  median round: verify-only {b['rps']:.0f} req/s, revops {i['rps']:.0f} req/s")
        print(f"  ratio: {r['ratio']:.2f}x the verify-only floor (target >= {r['target']:.2f}x)")
        print(f"  stored {c['events']} (processed {c['processed']}), customers {c['customers']}, "
              f"accounts {c['accounts']} in the median round; over all rounds lost {c['lost']}, doubled {c['doubled']}; "
              f"answers {i['codes']} {i['statuses']}")
        reasons = [why for bad, why in ((r["ratio"] < r["target"], "ratio below target"),
                                        (not r["correct"], "events lost, doubled or refused"),
                                        (not r["durable"], "storage not durable")) if bad]
        print(f"  {'PASS' if r['ok'] else 'FAIL: ' + ', '.join(reasons)}")
    out = ROOT / "bench" / "results.json"
    try:
        existing = json.loads(out.read_text()) if out.exists() else {}
    except ValueError:
        existing = {}
    existing["webhook_ingest_plain" if args.plain else "webhook_ingest"] = [
        {k: v for k, v in r.items() if k != "turns"} for r in results]
    out.write_text(json.dumps(existing, indent=2, default=str))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
