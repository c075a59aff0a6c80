"""Benchmark: Stripe webhook ingest through uvicorn on loopback, against a FastAPI endpoint that
only verifies the signature, measured in the same run.

    python bench/webhook_ingest.py [--db sqlite|postgresql|both] [--events 3000] [--concurrency 8]

Distinct signed `customer.created` events (each stores the event, mirrors the customer and
creates its account) with 10 % duplicate deliveries mixed in. Prints requests per second for
both servers and their ratio, and checks that no event was lost and none applied twice, and
that the floor answered 200 to every request (it reads the body and verifies the signature as
the real endpoint does). Concurrent deliveries share transactions in revops (group commit,
bot/billing/batch.py): the figure is the endpoint's, batching included.
PostgreSQL is a throwaway server (tests/support/postgres.py). Target: ratio >= 0.5.

The machine's other load moves both figures: compare ratios of one run, and run it more than once.
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


def _serve_revops(port: int, database_url: str, ready) -> None:
    import uvicorn

    from bot.settings import load_settings
    from bot.app import create_app

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
            events = (await session.execute(select(func.count()).select_from(StripeEvent)
                                            .where(StripeEvent.id.like(f"evt_bench{prefix}%")))).scalar_one()
            processed = (await session.execute(select(func.count()).select_from(StripeEvent).where(
                StripeEvent.id.like(f"evt_bench{prefix}%"), StripeEvent.status == "processed"))).scalar_one()
            customers = (await session.execute(select(func.count()).select_from(StripeCustomer)
                                               .where(StripeCustomer.id.like(f"cus_bench{prefix}%")))).scalar_one()
            accounts = (await session.execute(select(func.count()).select_from(Account)
                                              .where(Account.id.like(f"acct_bench{prefix}%")))).scalar_one()
    finally:
        await db.dispose()
    return {"events": events, "processed": processed, "customers": customers, "accounts": accounts,
            "lost": expected - events, "doubled": max(0, events - expected)}


def run_one(db: str, n: int, concurrency: int, duplicates: float) -> dict:
    pg = None
    workdir = tempfile.mkdtemp(prefix="revops-bench-")
    if db == "sqlite":
        database_url = f"sqlite+aiosqlite:///{workdir}/bench.db"
    else:
        from tests.support.postgres import PostgresServer

        pg = PostgresServer().start()
        database_url = asyncio.run(pg.create_database())
    procs = []
    try:
        baseline_proc, baseline_port = _start(_serve_baseline)
        procs.append(baseline_proc)
        revops_proc, revops_port = _start(_serve_revops, database_url)
        procs.append(revops_proc)

        warm, _ = make_bodies(200, 0.0)
        asyncio.run(_load(baseline_port, warm, concurrency))
        asyncio.run(_load(revops_port, warm, concurrency))

        requests, dup_count = make_bodies(n, duplicates)
        prefix = json.loads(requests[0][0])["id"][len("evt_bench"):len("evt_bench") + 8]
        baseline = asyncio.run(_load(baseline_port, requests, concurrency))
        ingest = asyncio.run(_load(revops_port, requests, concurrency))
        check = asyncio.run(_verify(database_url, n, prefix))
        ok = (baseline["codes"] == {200: len(requests)}
              and check["lost"] == 0 and check["doubled"] == 0 and check["processed"] == n
              and check["customers"] == n and check["accounts"] == n
              and ingest["codes"] == {200: len(requests)} and ingest["statuses"].get("duplicate", 0) == dup_count)
        return {"db": db, "events": n, "duplicates": dup_count, "concurrency": concurrency, "baseline": baseline,
                "ingest": ingest, "ratio": ingest["rps"] / baseline["rps"], "check": check, "ok": ok}
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(10)
        if pg is not None:
            pg.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--events", type=int, default=3000, help="distinct events (default 3000)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duplicates", type=float, default=0.10, help="share of duplicate deliveries (0.10)")
    args = parser.parse_args(argv)
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = []
    for db in dbs:
        r = run_one(db, args.events, args.concurrency, args.duplicates)
        results.append(r)
        b, i, c = r["baseline"], r["ingest"], r["check"]
        print(f"[{db}] {r['events']} distinct events + {r['duplicates']} duplicates, concurrency {r['concurrency']}")
        print(f"  verify-only FastAPI: {b['rps']:8.0f} req/s  (p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms)")
        print(f"  revops ingest:       {i['rps']:8.0f} req/s  (p50 {i['p50_ms']:.1f} ms, p99 {i['p99_ms']:.1f} ms)")
        print(f"  ratio: {r['ratio']:.2f}x the verify-only floor (target >= 0.50)")
        print(f"  stored {c['events']} (processed {c['processed']}), customers {c['customers']}, "
              f"accounts {c['accounts']}; lost {c['lost']}, doubled {c['doubled']}; "
              f"answers {i['codes']} {i['statuses']}")
        print(f"  {'OK' if r['ok'] else 'FAILED'}")
    out = ROOT / "bench" / "results.json"
    try:
        existing = json.loads(out.read_text()) if out.exists() else {}
    except ValueError:
        existing = {}
    existing["webhook_ingest"] = results
    out.write_text(json.dumps(existing, indent=2, default=str))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
