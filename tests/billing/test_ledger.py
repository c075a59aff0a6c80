"""The credit ledger API (the grants issue builds on it), on SQLite and PostgreSQL."""

import asyncio
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from bot.billing import ledger
from bot.billing.models import Account
from bot.db import Database
from bot.errors import Conflict, NotFound

T0 = datetime(2026, 1, 5, 23, 30, tzinfo=timezone.utc)


@pytest.fixture
async def db(db_url):
    database = Database(db_url)
    await database.upgrade()
    async with database.transaction() as session:
        await ledger.ensure_account(session, "acct_1", stripe_customer_id="cus_1", email="Ada@Example.com", at=T0)
        await ledger.ensure_account(session, "acct_2", at=T0)
    yield database
    await database.dispose()


async def _append(db, key, delta, kind="grant", at=T0, account="acct_1"):
    async with db.transaction() as session:
        return await ledger.append_entry(session, account_id=account, delta=delta, kind=kind, reason=f"test {key}",
                                         actor="U0APPROVER", idempotency_key=key, at=at)


async def test_resolve_account_by_id_customer_and_email(db):
    async with db.transaction() as session:
        for ref in ("acct_1", "cus_1", "ada@example.com", "ADA@EXAMPLE.COM", " acct_1 "):
            account = await ledger.resolve_account(session, ref)
            assert account is not None and account.id == "acct_1", ref
        for ref in ("acct_nope", "cus_nope", "nobody@example.com", ""):
            assert await ledger.resolve_account(session, ref) is None


async def test_find_account_gives_the_same_account_as_a_row_in_reads_and_writes(db):
    await _append(db, "k-find", 40)
    for unit in (db.reading, db.transaction):
        async with unit() as session:
            for ref in ("acct_1", "cus_1", "ada@example.com", "ADA@EXAMPLE.COM", " acct_1 "):
                row = await ledger.find_account(session, ref)
                assert row is not None and (row.id, row.balance, row.email) == ("acct_1", 40, "Ada@Example.com"), ref
                assert row.created_at == T0  # the UTC type applies to rows too
            for ref in ("acct_nope", "cus_nope", "nobody@example.com", ""):
                assert await ledger.find_account(session, ref) is None
            entries = await ledger.recent_entries(session, "acct_1")
            assert [(e.delta, e.balance_after, e.idempotency_key) for e in entries] == [(40, 40, "k-find")]


async def test_append_balance_and_idempotency(db):
    first = await _append(db, "k1", 50)
    again = await _append(db, "k1", 50)
    assert again.id == first.id and first.balance_after == 50
    await _append(db, "k2", -20, kind="claim")
    async with db.transaction() as session:
        assert await ledger.balance(session, "acct_1") == 30
        assert await ledger.balance(session, "acct_unknown") == 0
        entries = await ledger.recent_entries(session, "acct_1")
    assert [(e.delta, e.kind, e.balance_after) for e in entries] == [(-20, "claim", 30), (50, "grant", 50)]


async def test_never_below_zero(db):
    await _append(db, "k1", 10)
    with pytest.raises(Conflict, match="below zero: the balance is 10 credits and the change is -11"):
        await _append(db, "k2", -11, kind="adjustment")
    with pytest.raises(NotFound):
        await _append(db, "k3", 5, account="acct_missing")
    async with db.transaction() as session:
        assert await ledger.balance(session, "acct_1") == 10
        assert len(await ledger.recent_entries(session, "acct_1")) == 1


async def test_a_conflict_leaves_the_rest_of_the_transaction_usable(db):
    async with db.transaction() as session:
        await ledger.append_entry(session, account_id="acct_1", delta=5, kind="grant", reason="r", actor="a",
                                  idempotency_key="a", at=T0)
        with pytest.raises(Conflict):
            await ledger.append_entry(session, account_id="acct_1", delta=-6, kind="claim", reason="r", actor="a",
                                      idempotency_key="b", at=T0)
        account = await session.get(Account, "acct_1")
        assert account.balance == 5
    async with db.transaction() as session:
        assert await ledger.balance(session, "acct_1") == 5


async def test_the_database_itself_refuses_a_negative_balance(db):
    with pytest.raises(DBAPIError):
        async with db.transaction() as session:
            await session.execute(update(Account).where(Account.id == "acct_2").values(balance=-1))


async def test_ledger_is_append_only(db):
    await _append(db, "k1", 10)
    for statement in ("UPDATE ledger_entries SET delta = 1000", "DELETE FROM ledger_entries"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.transaction() as session:
                await session.execute(text(statement))


async def test_granted_on_counts_grants_of_that_utc_day(db):
    await _append(db, "g1", 100, at=T0)  # 2026-01-05 23:30 UTC
    await _append(db, "g2", 50, at=T0 + timedelta(minutes=40))  # 2026-01-06 00:10 UTC
    await _append(db, "p1", 70, kind="purchase", at=T0)
    await _append(db, "o1", 30, account="acct_2", at=T0)
    async with db.transaction() as session:
        assert await ledger.granted_on(session, "acct_1", date(2026, 1, 5)) == 100
        assert await ledger.granted_on(session, "acct_1", date(2026, 1, 6)) == 50
        assert await ledger.granted_on(session, "acct_1", date(2026, 1, 7)) == 0


async def test_unknown_kind_is_refused(db):
    from bot.errors import UsageError

    with pytest.raises(UsageError):
        await _append(db, "x", 5, kind="gift")


async def test_concurrent_withdrawals_cannot_both_pass(db):
    """Two writers each take 70 of 100 at the same time: exactly one wins (row lock + conditional update)."""
    await _append(db, "fund", 100)
    gate, both_in = asyncio.Event(), asyncio.Event()
    inside: list[str] = []

    async def withdraw(key):
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))
            inside.append(key)
            if len(inside) == 2:
                both_in.set()
            await gate.wait()
            return await ledger.append_entry(session, account_id="acct_1", delta=-70, kind="claim", reason="r",
                                             actor="a", idempotency_key=key, at=T0)

    if db.dialect == "sqlite":
        # SQLite write transactions are serial (BEGIN IMMEDIATE): start them one after the other.
        gate.set()
    tasks = [asyncio.create_task(withdraw(f"w{i}")) for i in range(2)]
    if db.dialect != "sqlite":
        await asyncio.wait_for(both_in.wait(), 10)  # both transactions open, neither has written
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "LedgerEntry"]
    async with db.transaction() as session:
        assert await ledger.balance(session, "acct_1") == 30


async def test_concurrent_writers_of_one_key_apply_it_once(db):
    results = await asyncio.gather(*[_append(db, "same", 25) for _ in range(5)])
    assert len({r.id for r in results}) == 1
    async with db.transaction() as session:
        assert await ledger.balance(session, "acct_1") == 25
