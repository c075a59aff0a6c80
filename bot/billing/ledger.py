"""Accounts and the append-only credit ledger.

The API the grants issue (and everything else that moves credits) builds on:

``async def resolve_account(session, ref: str) -> Account | None``
    ``ref`` is an app account id, a Stripe customer id (``cus_…``) or an email
    (case-insensitive); an exact account id wins over the other two.

``async def balance(session, account_id: str) -> int``
    The current balance (0 for an unknown account).

``async def append_entry(session, *, account_id, delta, kind, reason, actor, idempotency_key, at) -> LedgerEntry``
    ``kind`` is one of purchase / grant / adjustment / claim. An existing
    ``idempotency_key`` returns the entry already written and applies nothing.
    A change that would take the balance below zero raises
    ``bot.errors.Conflict`` with a sentence naming the balance; an
    unknown account raises ``NotFound``. The balance lives in
    ``accounts.balance`` with ``CHECK (balance >= 0)`` and is changed by a
    conditional ``UPDATE … WHERE balance + delta >= 0`` in the same transaction
    (and SAVEPOINT) as the entry insert, so two concurrent writers on PostgreSQL
    cannot both pass and a failed insert leaves the balance untouched. The
    caller's transaction commits both or neither.

``async def granted_on(session, account_id: str, day: date) -> int``
    Total of ``grant`` entries for the account on that UTC day (the daily cap).

``async def recent_entries(session, account_id: str, limit: int = 10) -> list[LedgerEntry]``
    Newest first.

``async def ensure_account(session, account_id, *, stripe_customer_id=None, email=None, at) -> Account``
    Creates the account at balance 0 if it does not exist; links the customer
    and email (used by the mirror: every mirrored customer has an account).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import Conflict, NotFound, UsageError

from .models import LEDGER_KINDS, Account, LedgerEntry
from .sqlutil import insert_ignore


_ACCOUNTS = Account.__table__
# How a reference names an account, tried in this order; built once (`credits <account>` runs them on
# every look). Over the table: `find_account` gives rows; `resolve_account` loads the ORM object.
_ACCOUNT_BY = {
    "id": select(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("ref")),
    "customer": select(_ACCOUNTS).where(_ACCOUNTS.c.stripe_customer_id == bindparam("ref")),
    "email": (select(_ACCOUNTS).where(func.lower(_ACCOUNTS.c.email) == bindparam("ref"))
              .order_by(_ACCOUNTS.c.created_at).limit(1)),
}


def _account_lookups(ref: str) -> list[tuple[str, str]]:
    """An account id first; then a Stripe customer id or an email (case-insensitive)."""
    ref = (ref or "").strip()
    if not ref:
        return []
    return [("id", ref)] + ([("customer", ref)] if ref.startswith("cus_") else []) + (
        [("email", ref.lower())] if "@" in ref else [])


async def find_account(session: AsyncSession, ref: str):
    """The account `ref` names (an account id, a cus_… id or an email), as a read-only row; None if none."""
    for by, value in _account_lookups(ref):
        row = (await session.rows(_ACCOUNT_BY[by], {"ref": value})).first()
        if row is not None:
            return row
    return None


async def resolve_account(session: AsyncSession, ref: str) -> Account | None:
    """The account `ref` names, as the ORM object (to change it); None if none."""
    for by, value in _account_lookups(ref):
        if by == "id":
            account = await session.get(Account, value)
        else:
            account = (await session.execute(select(Account).from_statement(_ACCOUNT_BY[by]),
                                             {"ref": value})).scalars().first()
        if account is not None:
            return account
    return None


async def balance(session: AsyncSession, account_id: str) -> int:
    value = (await session.execute(select(Account.balance).where(Account.id == account_id))).scalar_one_or_none()
    return int(value or 0)


async def ensure_account(session: AsyncSession, account_id: str, *, stripe_customer_id: str | None = None,
                         email: str | None = None, at: datetime) -> Account:
    """The account with this id, created at balance 0 when missing; links customer and email."""
    await link_account(session, account_id, stripe_customer_id=stripe_customer_id, email=email, at=at)
    account = await session.get(Account, account_id, populate_existing=True)
    assert account is not None
    return account


def account_row(account_id: str, *, stripe_customer_id: str | None, email: str | None, at: datetime) -> dict:
    """A new account's row: balance 0, linked to its customer and email."""
    return dict(id=account_id, stripe_customer_id=stripe_customer_id, email=email, balance=0, created_at=at,
                updated_at=at)


async def link_account(session: AsyncSession, account_id: str, *, stripe_customer_id: str | None = None,
                       email: str | None = None, at: datetime) -> None:
    """Like `ensure_account` without loading it: one INSERT when the account is new (webhook path)."""
    # DO NOTHING on any conflict: the id exists, or the customer is already linked to another account.
    if await insert_ignore(session, Account, account_row(account_id, stripe_customer_id=stripe_customer_id,
                                                         email=email, at=at), None):
        return
    account = await session.get(Account, account_id)
    if account is None:
        # The customer is linked to another account already: create this one unlinked.
        await insert_ignore(session, Account, account_row(account_id, stripe_customer_id=None, email=email, at=at),
                            ["id"])
        return
    if stripe_customer_id and account.stripe_customer_id != stripe_customer_id and account.stripe_customer_id is None:
        owner = (await session.execute(
            select(Account.id).where(Account.stripe_customer_id == stripe_customer_id))).scalar_one_or_none()
        # A customer links to one account; an account keeps the first customer it was linked to.
        if owner is None:
            account.stripe_customer_id = stripe_customer_id
            account.updated_at = at
    if email and account.email != email:
        account.email = email
        account.updated_at = at
    await session.flush()


async def append_entry(session: AsyncSession, *, account_id: str, delta: int, kind: str, reason: str, actor: str,
                       idempotency_key: str, at: datetime, ref: str | None = None) -> LedgerEntry:
    if kind not in LEDGER_KINDS:
        raise UsageError(f"unknown ledger entry kind `{kind}`; expected one of {', '.join(LEDGER_KINDS)}")
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise UsageError("a ledger change must be a whole number of credits")
    existing = await _by_key(session, idempotency_key)
    if existing is not None:
        return existing
    savepoint = await session.begin_nested()
    try:
        # Conditional update: on PostgreSQL the row lock makes a concurrent writer re-check the
        # condition against the committed balance, so two withdrawals can never both pass.
        new_balance = (await session.execute(
            update(Account)
            .where(Account.id == account_id, Account.balance + delta >= 0)
            .values(balance=Account.balance + delta, updated_at=at)
            .returning(Account.balance)
            .execution_options(synchronize_session=False)
        )).scalar_one_or_none()
        if new_balance is None:
            current = (await session.execute(
                select(Account.balance).where(Account.id == account_id))).scalar_one_or_none()
            if current is None:
                raise NotFound(f"no account `{account_id}`")
            raise Conflict(
                f"that would take account {account_id} below zero: the balance is {current} credits and the "
                f"change is {delta:+d}; nothing was changed."
            )
        inserted = await insert_ignore(session, LedgerEntry, dict(
            account_id=account_id, delta=delta, kind=kind, reason=reason, actor=actor,
            idempotency_key=idempotency_key, ref=ref, balance_after=int(new_balance), at=at,
        ), ["idempotency_key"])
    except BaseException:
        await savepoint.rollback()
        raise
    if inserted:
        await savepoint.commit()
    else:
        # A concurrent request wrote the same key first: undo our balance change, return theirs.
        await savepoint.rollback()
    entry = await _by_key(session, idempotency_key)
    assert entry is not None
    # Keep an Account already loaded in this session in step with the database.
    await session.get(Account, account_id, populate_existing=True)
    return entry


async def _by_key(session: AsyncSession, key: str) -> LedgerEntry | None:
    return (await session.execute(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))).scalar_one_or_none()


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


async def granted_on(session: AsyncSession, account_id: str, day: date) -> int:
    start, end = _day_bounds(day)
    total = (await session.execute(
        select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.kind == "grant",
            LedgerEntry.at >= start, LedgerEntry.at < end,
        )
    )).scalar_one()
    return int(total)


_ENTRIES = LedgerEntry.__table__
_RECENT = (select(_ENTRIES).where(_ENTRIES.c.account_id == bindparam("account_id"))
           .order_by(_ENTRIES.c.at.desc(), _ENTRIES.c.id.desc()).limit(bindparam("limit")))


async def recent_entries(session: AsyncSession, account_id: str, limit: int = 10) -> list:
    """The newest ledger entries first, as read-only rows (built once: `credits` runs it on every look)."""
    return list((await session.rows(_RECENT, {"account_id": account_id, "limit": limit})).all())
