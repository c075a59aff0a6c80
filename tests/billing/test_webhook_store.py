"""Storing Stripe events once and applying them (bot/billing/events.py), and the webhook's group
commit (bot/billing/batch.py), on SQLite and PostgreSQL.

One function does it for every path: a batch must leave exactly what storing its events one by
one leaves; duplicates (stored before, or twice in one batch) do nothing; order does not matter;
a failing handler's event is stored as failed and the others as usual; a replay applies again
without applying twice; a database that is down answers 503 for every delivery of the batch."""

import asyncio
import json
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import insert, select

from bot.billing import events as events_module
from bot.billing import handlers
from bot.billing.batch import WebhookGroupCommit
from bot.billing.events import store_alone, store_and_apply
from bot.billing.handlers import Applied
from bot.billing.models import (Account, LedgerEntry, StripeCustomer, StripeEvent, StripeInvoice,
                                StripeSubscription)
from bot.billing.webhooks import ingest
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
            "payment_status": "paid", "mode": "payment", "payment_intent": f"pi_{session_id}", "metadata": {"credits": credits},
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


async def _store(db, events, *, source="webhook", again=False):
    async with db.transaction() as session:
        return await store_and_apply(session, events, source=source, now=NOW, again=again)


async def _state(db) -> dict:
    """Every billing table, as comparable tuples (ids, statuses, details, values)."""
    async with db.transaction() as session:
        def rows(model, *columns):
            return session.execute(select(*[getattr(model, c) for c in columns]).order_by(*[
                getattr(model, c) for c in columns[:1]]))
        return {
            "events": (await rows(StripeEvent, "id", "status", "detail", "error", "type", "object_id", "source",
                                  "attempts")).all(),
            "customers": (await rows(StripeCustomer, "id", "email", "name", "account_id", "deleted", "version")).all(),
            "subscriptions": (await rows(StripeSubscription, "id", "status", "plan", "customer_id", "version")).all(),
            "invoices": (await rows(StripeInvoice, "id", "status", "payment_failed", "attempt_count", "version")).all(),
            "accounts": (await rows(Account, "id", "stripe_customer_id", "email", "balance")).all(),
            # (no ids: a PostgreSQL sequence moves on in a rolled-back savepoint too)
            "ledger": (await rows(LedgerEntry, "idempotency_key", "account_id", "delta", "kind")).all(),
        }


def _spy_create_all(monkeypatch) -> list[tuple[int, str]]:
    """Record each `mirror.create_all` of a batch: how many objects, and whether they were all new."""
    calls: list[tuple[int, str]] = []
    mirror = events_module.mirror
    real = mirror.create_all

    async def spying(session, rows):
        try:
            changes = await real(session, rows)
        except mirror.NotNew:
            calls.append((len(rows), "not new"))
            raise
        calls.append((len(rows), "created"))
        return changes

    monkeypatch.setattr(mirror, "create_all", spying)
    return calls


class CountingGroupCommit(WebhookGroupCommit):
    """The webhook group commit, noting the size of every batch it stores in one transaction."""

    def __init__(self, db):
        super().__init__(db)
        self.sizes: list[int] = []

    async def store_batch(self, transaction, items):
        self.sizes.append(len(items))
        return await super().store_batch(transaction, items)


async def test_a_batch_leaves_what_storing_its_events_one_by_one_leaves(db, twin, monkeypatch):
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
        _event("customer.created", _customer(4), 18),  # a creation after other events: through its handler
        _event("payout.paid", {"id": "po_1", "object": "payout"}, 19),
    ]
    for database in (db, twin):
        await _store(database, before)

    results = await _store(db, events)
    serial = [await store_alone(twin, e, NOW) for e in events]

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
    # Each stored row says what applying it did, the creations' included (claimed with their outcome).
    stored = {e[0]: e[2] for e in state["events"]}
    assert stored["evt_b0010"] == "customer cus_b1: added to the mirror"
    assert stored["evt_b0016"] == "subscription sub_b1: status incomplete → active"


@pytest.mark.parametrize("way", ["group commit", "one transaction"])
async def test_a_failing_handler_is_stored_failed_and_the_others_as_usual(db, twin, way):
    # A credit pack before the failing event: undone with the batch (the group commit's
    # transaction, or the shared savepoint inside one transaction) and applied again on its own,
    # it must still be credited exactly once.
    events = [
        _event("customer.created", _customer(1), 1),
        _event("checkout.session.completed", _checkout("cs_ok", credits="10"), 2),
        _event("checkout.session.completed", _checkout("cs_bad", credits="12abc"), 3),
        _event("customer.created", _customer(2), 4),
        _event("customer.created", _customer(1), 1),
    ]
    if way == "group commit":
        group = CountingGroupCommit(db)
        answers = await asyncio.gather(*[group.submit(e, NOW) for e in events])
        assert group.sizes == [5]
    else:
        answers = await _store(db, events)
    assert [(a.event_id, a.status) for a in answers] == [
        ("evt_b0001", "processed"), ("evt_b0002", "processed"), ("evt_b0003", "failed"), ("evt_b0004", "processed"),
        ("evt_b0001", "duplicate")]
    assert "metadata.credits must be a positive whole number" in answers[2].detail
    state = await _state(db)
    assert [(e[0], e[1]) for e in state["events"]] == [("evt_b0001", "processed"), ("evt_b0002", "processed"),
                                                       ("evt_b0003", "failed"), ("evt_b0004", "processed")]
    assert "metadata.credits must be a positive whole number" in state["events"][2][3]
    assert [c[0] for c in state["customers"]] == ["cus_b1", "cus_b2"]
    assert state["ledger"] == [("checkout:cs_ok", "acct_b1", 10, "purchase")]
    assert [a[3] for a in state["accounts"] if a[0] == "acct_b1"] == [10]
    assert db.engine.pool.checkedout() == 0  # the burst gave its connection back
    # The same as one delivery at a time.
    for event in events:
        await store_alone(twin, event, NOW)
    assert await _state(db) == await _state(twin)


async def test_a_statement_the_database_refuses_inside_a_handler_fails_only_its_event(db, monkeypatch):
    """On PostgreSQL a refused statement aborts the transaction: the savepoint is what lets the
    batch's other events commit."""
    async def duplicate_account(session, obj, version, at):
        row = dict(id="acct_taken", balance=0, created_at=at, updated_at=at)
        await session.execute(insert(Account), [row])  # a plain INSERT: the second one breaks the primary key
        return Applied("processed", "inserted")

    monkeypatch.setitem(handlers.HANDLERS, "test.account", duplicate_account)
    events = [_event("customer.created", _customer(1), 1),
              _event("test.account", {"id": "x_1"}, 2),
              _event("test.account", {"id": "x_2"}, 3),
              _event("customer.created", _customer(2), 4)]
    results = await _store(db, events)
    assert [r.status for r in results] == ["processed", "processed", "failed", "processed"]
    assert "IntegrityError" in results[2].detail
    state = await _state(db)
    assert [(e[0], e[1]) for e in state["events"]] == [("evt_b0001", "processed"), ("evt_b0002", "processed"),
                                                       ("evt_b0003", "failed"), ("evt_b0004", "processed")]
    assert sorted(a[0] for a in state["accounts"]) == ["acct_b1", "acct_b2", "acct_taken"]


async def test_concurrent_deliveries_share_one_transaction_and_duplicates_across_batches_do_nothing(db):
    group = CountingGroupCommit(db)
    first = [_event("customer.created", _customer(n), n) for n in range(1, 6)]
    first.append(_event("checkout.session.completed", _checkout("cs_once", credits="7"), 6))
    answers = await asyncio.gather(*[group.submit(e, NOW) for e in first])
    assert [a.status for a in answers] == ["processed"] * 6 and group.sizes == [6]
    # Alone, a delivery is a batch of one; a later burst is a batch of its own, and what it
    # redelivers (the credit pack included) is a duplicate.
    assert (await group.submit(_event("customer.created", _customer(7), 7), NOW)).status == "processed"
    again = await asyncio.gather(*[group.submit(e, NOW) for e in [first[0], first[5], first[1]]])
    assert [a.status for a in again] == ["duplicate"] * 3 and group.sizes == [6, 1, 3]
    state = await _state(db)
    assert len(state["events"]) == 7 and len(state["customers"]) == len(state["accounts"]) == 6
    assert [a[3] for a in state["accounts"] if a[0] == "acct_b1"] == [7]
    assert len(state["ledger"]) == 1


async def test_order_does_not_matter(db, twin):
    """Newer state first, then older updates and the creation: in one batch, across batches, or
    one by one, the mirror ends on the newest state."""
    created = _event("customer.subscription.created", _subscription(1, "incomplete"), 1, created=T)
    active = _event("customer.subscription.updated", _subscription(1, "active"), 2, created=T + 10)
    canceled = _event("customer.subscription.updated", _subscription(1, "canceled"), 3, created=T + 20)
    results = await _store(db, [canceled, created, active])
    assert [r.status for r in results] == ["processed", "ignored", "ignored"]
    for event in (active, canceled, created):  # across transactions, in another order
        await store_alone(twin, event, NOW)
    for database in (db, twin):
        [sub] = (await _state(database))["subscriptions"]
        assert (sub[1], sub[4]) == ("canceled", T + 20)
    # Redelivered after the fact, they are duplicates and change nothing.
    assert [r.status for r in await _store(db, [created, active, canceled])] == ["duplicate"] * 3
    [sub] = (await _state(db))["subscriptions"]
    assert sub[1] == "canceled"


async def test_the_same_event_by_webhook_and_by_replay_is_applied_once(db):
    pack = _event("checkout.session.completed", _checkout("cs_both", credits="25"), 1)
    [first] = await _store(db, [pack])
    assert (first.status, first.changed) == ("processed", True)
    # `replay`: applied again, nothing changes twice; the stored row counts the attempt.
    [replayed] = await _store(db, [pack], source="replay", again=True)
    assert (replayed.status, replayed.changed) == ("processed", False)
    assert "already added" in replayed.detail
    state = await _state(db)
    assert [a[3] for a in state["accounts"]] == [25] and len(state["ledger"]) == 1
    assert [(e[6], e[7]) for e in state["events"]] == [("webhook", 2)]

    # Reconcile stored a missed event first; Stripe's late delivery is a duplicate.
    late = _event("checkout.session.completed", _checkout("cs_late", credits="5"), 2)
    [stored] = await _store(db, [late], source="reconcile")
    assert stored.status == "processed"
    [delivered] = await _store(db, [late])
    assert delivered.status == "duplicate"
    state = await _state(db)
    assert [a[3] for a in state["accounts"]] == [30] and len(state["ledger"]) == 2
    assert [(e[0], e[6], e[7]) for e in state["events"]][1] == ("evt_b0002", "reconcile", 1)


async def test_replaying_a_failed_event_stores_its_new_outcome(db):
    bad = _event("checkout.session.completed", _checkout("cs_fix", credits="3x"), 1)
    [failed] = await _store(db, [bad])
    assert failed.status == "failed"
    fixed = json.loads(json.dumps(bad))
    fixed["data"]["object"]["metadata"]["credits"] = "3"  # the copy Stripe has now
    [result] = await _store(db, [fixed], source="replay", again=True)
    assert result.status == "processed"
    [event] = (await _state(db))["events"]
    assert (event[1], event[3], event[7]) == ("processed", None, 2)
    async with db.transaction() as session:
        stored = await session.get(StripeEvent, "evt_b0001")
        assert stored.payload["data"]["object"]["metadata"]["credits"] == "3"


async def _dead_database(db_url, request) -> Database:
    if db_url.startswith("sqlite"):
        return Database("sqlite+aiosqlite:////proc/revops-no-such-dir/revops.db")
    server = request.getfixturevalue("pg_server")
    return Database(f"postgresql+asyncpg://postgres@127.0.0.1:{server.port}/no_such_database")


async def test_database_down_answers_503_to_every_delivery_of_the_batch(db_url, request):
    dead = await _dead_database(db_url, request)
    services = SimpleNamespace(db=dead, stripe=None, clock=SimpleNamespace(now=lambda: datetime.now(timezone.utc)),
                               settings=SimpleNamespace(env=SimpleNamespace(
                                   stripe_webhook_secret=SecretStr(WEBHOOK_SECRET))))
    bodies = [json.dumps(_event("customer.created", _customer(n), n, created=int(time.time()))) for n in range(4)]
    group = CountingGroupCommit(dead)
    try:
        answers = await asyncio.gather(*[
            ingest(services, body.encode(), signed_headers(WEBHOOK_SECRET, body)["Stripe-Signature"], group.submit)
            for body in bodies])
        assert [a.status_code for a in answers] == [503] * 4
        assert all("could not store the event" in a.body["error"] for a in answers)
        assert group.sizes == [4]  # one batch, not one by one after it failed
        with pytest.raises(DatabaseUnavailable):
            await group.submit(_event("customer.created", _customer(9), 9), NOW)
        # A bad signature is refused before the database is touched.
        bad = await ingest(services, bodies[0].encode(), "t=1,v1=00", group.submit)
        assert bad.status_code == 400 and group.sizes == [4, 1]
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
