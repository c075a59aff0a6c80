"""Group commit of webhook deliveries (bot/billing/batch.py), on SQLite and PostgreSQL.

A batch must leave exactly what applying its events one by one leaves; a failing event is
stored as failed and the others as usual; duplicates (stored before, or twice in one batch) do
nothing; a database that is down answers 503 for every delivery of the batch."""

import asyncio
import json
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bot.billing import batch
from bot.billing.batch import WebhookGroupCommit as GroupCommit, ingest_batch
from bot.billing.models import (Account, LedgerEntry, StripeCustomer, StripeEvent, StripeInvoice,
                                       StripeSubscription)
from bot.billing.webhooks import ingest, ingest_event
from bot.db import Database
from bot.errors import DatabaseUnavailable

from tests.support.harness import WEBHOOK_SECRET
from tests.support.localstripe import make_event, signed_headers

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
T = int(NOW.timestamp()) - 60


def _customer(n, account=None, email=None):
    return {"id": f"cus_b{n}", "object": "customer", "email": email or f"user{n}@example.com", "name": f"User {n}",
            "metadata": {"user_id": account or f"acct_b{n}"}}


def _subscription(n, status="active"):
    return {"id": f"sub_b{n}", "object": "subscription", "customer": f"cus_b{n}", "status": status,
            "current_period_end": 1_800_000_000, "items": {"data": [{"price": {"id": "price_pro"}}]}}


def _invoice(n, status="open", attempts=0):
    return {"id": f"in_b{n}", "object": "invoice", "customer": f"cus_b{n}", "subscription": f"sub_b{n}",
            "status": status, "currency": "usd", "amount_due": 900, "attempt_count": attempts, "created": T}


def _checkout(session_id, credits="25", account="acct_b1", customer="cus_b1"):
    return {"id": session_id, "object": "checkout.session", "customer": customer, "client_reference_id": account,
            "payment_status": "paid", "payment_intent": f"pi_{session_id}", "metadata": {"credits": credits},
            "customer_details": {"email": "buyer@example.com"}}


def _event(event_type, obj, n, created=T):
    return make_event(event_type, obj, created=created, event_id=f"evt_b{n:04d}")


@pytest.fixture
async def db(db_url):
    database = Database(db_url)
    await database.upgrade()
    yield database
    await database.dispose()


@pytest.fixture
async def twin(request, db_url, tmp_path):
    """A second, empty database of the same kind: the one-by-one reference."""
    if db_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path}/twin.db"
    else:
        url = await request.getfixturevalue("pg_server").create_database()
    database = Database(url)
    await database.upgrade()
    yield database
    await database.dispose()


async def _state(db) -> dict:
    """Every billing table, as comparable tuples (ids, statuses, details, values)."""
    async with db.transaction() as session:
        def rows(model, *columns):
            return session.execute(select(*[getattr(model, c) for c in columns]).order_by(*[
                getattr(model, c) for c in columns[:1]]))
        return {
            "events": (await rows(StripeEvent, "id", "status", "detail", "error", "type", "object_id")).all(),
            "customers": (await rows(StripeCustomer, "id", "email", "name", "account_id", "deleted", "version")).all(),
            "subscriptions": (await rows(StripeSubscription, "id", "status", "plan", "customer_id", "version")).all(),
            "invoices": (await rows(StripeInvoice, "id", "status", "payment_failed", "attempt_count", "version")).all(),
            "accounts": (await rows(Account, "id", "stripe_customer_id", "email", "balance")).all(),
            "ledger": (await rows(LedgerEntry, "id", "account_id", "delta", "kind", "idempotency_key")).all(),
        }


def _one_batch_each(monkeypatch) -> list[int]:
    """Record the size of every batch the group commit stores."""
    sizes: list[int] = []
    real = batch.ingest_batch

    async def recording(transaction, items, **kw):
        if not kw:
            sizes.append(len(items))
        return await real(transaction, items, **kw)

    monkeypatch.setattr(batch, "ingest_batch", recording)
    return sizes


def _spy_create_all(monkeypatch) -> list[tuple[int, str]]:
    """Record each `mirror.create_all` of a batch: how many objects, and whether they were all new."""
    calls: list[tuple[int, str]] = []
    real = batch.mirror.create_all

    async def spying(session, rows):
        try:
            changes = await real(session, rows)
        except batch.mirror.NotNew:
            calls.append((len(rows), "not new"))
            raise
        calls.append((len(rows), "created"))
        return changes

    monkeypatch.setattr(batch.mirror, "create_all", spying)
    return calls


async def test_a_batch_leaves_what_applying_its_events_one_by_one_leaves(db, twin, monkeypatch):
    created_together = _spy_create_all(monkeypatch)
    before = [_event("customer.created", _customer(9), 1)]  # stored before the batch: its redelivery is a duplicate
    events = [
        _event("customer.created", _customer(1), 10),
        _event("customer.created", _customer(2), 11),
        _event("customer.subscription.created", _subscription(1, "incomplete"), 12),
        _event("invoice.created", _invoice(1), 13),
        _event("customer.created", _customer(2), 11),  # the same delivery twice in one batch
        before[0],
        _event("invoice.paid", _invoice(1, status="paid"), 15, created=T + 5),
        _event("customer.created", _customer(3, account="acct_b1"), 14),  # a second customer for acct_b1
        _event("customer.subscription.updated", _subscription(1, "active"), 16, created=T + 5),
        _event("checkout.session.completed", _checkout("cs_b1"), 17),
        _event("customer.created", _customer(4), 18),  # a creation after other events: one by one
        _event("payout.paid", {"id": "po_1", "object": "payout"}, 19),
    ]
    for event in before:
        await ingest_event(db, event, now=NOW)
        await ingest_event(twin, event, now=NOW)

    results = await ingest_batch(db.transaction, [(e, NOW) for e in events])
    serial = [await ingest_event(twin, e, now=NOW) for e in events]

    assert created_together == [(4, "created")]  # the two customers, the subscription and the invoice
    assert [(r.event_id, r.status, r.detail) for r in results] == [(r.event_id, r.status, r.detail) for r in serial]
    assert [r.status for r in results].count("duplicate") == 2
    assert [r.status for r in results][:4] == ["processed"] * 4
    assert await _state(db) == await _state(twin)
    state = await _state(db)
    assert [a[:2] for a in state["accounts"]] == [("acct_b1", "cus_b1"), ("acct_b2", "cus_b2"), ("acct_b4", "cus_b4"),
                                                  ("acct_b9", "cus_b9")]
    assert [a[3] for a in state["accounts"]] == [25, 0, 0, 0]
    assert {e[1] for e in state["events"]} == {"processed", "ignored"}


async def test_a_failing_event_is_stored_failed_and_the_others_as_usual(db):
    events = [
        _event("customer.created", _customer(1), 1),
        _event("checkout.session.completed", _checkout("cs_bad", credits="12abc"), 2),
        _event("customer.created", _customer(2), 3),
        _event("customer.created", _customer(1), 1),
    ]
    group = GroupCommit(db)
    answers = await asyncio.gather(*[group.submit(e, NOW) for e in events])
    assert [(a.event_id, a.status) for a in answers] == [
        ("evt_b0001", "processed"), ("evt_b0002", "failed"), ("evt_b0003", "processed"), ("evt_b0001", "duplicate")]
    assert "metadata.credits must be a positive whole number" in answers[1].detail
    state = await _state(db)
    assert [(e[0], e[1]) for e in state["events"]] == [("evt_b0001", "processed"), ("evt_b0002", "failed"),
                                                       ("evt_b0003", "processed")]
    assert "metadata.credits must be a positive whole number" in state["events"][1][3]
    assert [c[0] for c in state["customers"]] == ["cus_b1", "cus_b2"]
    assert state["ledger"] == []
    assert db.engine.pool.checkedout() == 0  # the burst gave its connection back


async def test_concurrent_deliveries_share_one_transaction(db, monkeypatch):
    sizes = _one_batch_each(monkeypatch)
    group = GroupCommit(db)
    first = [_event("customer.created", _customer(n), n) for n in range(1, 6)]
    answers = await asyncio.gather(*[group.submit(e, NOW) for e in first])
    assert [a.status for a in answers] == ["processed"] * 5 and sizes == [5]
    # Alone, a delivery is a batch of one; a later burst is a batch of its own.
    assert (await group.submit(_event("customer.created", _customer(6), 6), NOW)).status == "processed"
    again = await asyncio.gather(*[group.submit(e, NOW) for e in first[:2]])
    assert [a.status for a in again] == ["duplicate", "duplicate"] and sizes == [5, 1, 2]
    state = await _state(db)
    assert len(state["events"]) == len(state["customers"]) == len(state["accounts"]) == 6
    assert {e[2] for e in state["events"]} == {f"customer cus_b{n}: added to the mirror" for n in range(1, 7)}


async def test_creations_of_objects_that_exist_are_applied_one_by_one(db, twin, monkeypatch):
    created_together = _spy_create_all(monkeypatch)
    # cus_b2 is already mirrored, and acct_b3 already linked to another customer: the batch's
    # insert-them-all-at-once cannot hold, so it is redone through the handlers.
    setup = [_event("customer.created", _customer(2, email="old@example.com"), 1),
             _event("customer.created", _customer(7, account="acct_b3"), 2)]
    events = [_event("customer.created", _customer(1), 10),
              _event("customer.created", _customer(2, email="new@example.com"), 11, created=T + 1),
              _event("customer.created", _customer(3), 12)]
    for database in (db, twin):
        for event in setup:
            await ingest_event(database, event, now=NOW)
    results = await ingest_batch(db.transaction, [(e, NOW) for e in events])
    serial = [await ingest_event(twin, e, now=NOW) for e in events]
    assert created_together == [(3, "not new")]
    assert [(r.status, r.detail) for r in results] == [(r.status, r.detail) for r in serial]
    assert results[1].detail == "customer cus_b2: email old@example.com → new@example.com"
    assert await _state(db) == await _state(twin)
    stored = {e[0]: e[2] for e in (await _state(db))["events"]}
    assert stored["evt_b0011"] == results[1].detail  # the recorded outcome is the real one
    # New customers, but one's account is linked to another customer already.
    events = [_event("customer.created", _customer(5), 20),
              _event("customer.created", _customer(6, account="acct_b3"), 21)]
    results = await ingest_batch(db.transaction, [(e, NOW) for e in events])
    serial = [await ingest_event(twin, e, now=NOW) for e in events]
    assert created_together[1:] == [(2, "not new")]
    assert [(r.status, r.detail) for r in results] == [(r.status, r.detail) for r in serial]
    assert await _state(db) == await _state(twin)


async def _dead_database(db_url, request) -> Database:
    if db_url.startswith("sqlite"):
        return Database("sqlite+aiosqlite:////proc/revops-no-such-dir/revops.db")
    server = request.getfixturevalue("pg_server")
    return Database(f"postgresql+asyncpg://postgres@127.0.0.1:{server.port}/no_such_database")


async def test_database_down_answers_503_to_every_delivery_of_the_batch(db_url, request):
    dead = await _dead_database(db_url, request)
    services = SimpleNamespace(db=dead, clock=SimpleNamespace(now=lambda: datetime.now(timezone.utc)),
                               settings=SimpleNamespace(env=SimpleNamespace(
                                   stripe_webhook_secret=SecretStr(WEBHOOK_SECRET))))
    bodies = [json.dumps(_event("customer.created", _customer(n), n, created=int(time.time()))) for n in range(4)]
    try:
        answers = await asyncio.gather(*[
            ingest(services, body.encode(), signed_headers(WEBHOOK_SECRET, body)["Stripe-Signature"])
            for body in bodies])
        assert [a.status_code for a in answers] == [503] * 4
        assert all("could not store the event" in a.body["error"] for a in answers)
        with pytest.raises(DatabaseUnavailable):
            await GroupCommit(dead).submit(_event("customer.created", _customer(9), 9), NOW)
    finally:
        await dead.dispose()


def test_concurrent_signed_posts_are_each_stored_once(webhook_bot):
    """Through the live server: deliveries racing each other, duplicates among them, one failing."""
    now = int(time.time())
    events = [make_event("customer.created", _customer(n), created=now) for n in range(24)]
    events.append(make_event("checkout.session.completed", _checkout("cs_race", credits="x1"), created=now))
    deliveries = events + events[:6]

    async def post_all():
        async with httpx.AsyncClient(base_url=webhook_bot.url, timeout=30) as client:
            async def post(event):
                body = json.dumps(event)
                return await client.post("/webhooks/stripe", content=body, headers=signed_headers(WEBHOOK_SECRET, body))
            return await asyncio.gather(*[post(e) for e in deliveries])

    answers = asyncio.run(post_all())
    assert [r.status_code for r in answers] == [200] * len(deliveries)
    statuses = [r.json()["status"] for r in answers]
    assert statuses.count("processed") == 24 and statuses.count("failed") == 1 and statuses.count("duplicate") == 6
    stored = webhook_bot.rows(StripeEvent)
    assert len(stored) == 25 and sorted(e.status for e in stored).count("failed") == 1
    assert len(webhook_bot.rows(StripeCustomer)) == 24 and len(webhook_bot.rows(Account)) == 24
