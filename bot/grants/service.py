"""Four-eyes credit changes: request → one atomic decision → ledger entry, exactly once.

The decision is a conditional UPDATE (pending → approved|rejected|cancelled|expired)
in the same transaction as the ledger entry (idempotency key = the request id) and
the audit record the router writes: a second click, a concurrent click or a
replayed request finds the row no longer pending and changes nothing.

These functions take the session, who acts and when, and return what happened
(`Requested`, `Decision`, the requests themselves); `commands/grant.py` turns that into
the answer, the channel's approval message (`views.py`) and the audit enrichment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot import audit
from bot.billing import ledger
from bot.billing.models import Account, LedgerEntry
from bot.errors import NotFound, UsageError
from bot.grammar import as_id
from bot.settings import CreditsSection
from bot.text import Code, Text

from .models import GrantRequest

SYSTEM_ACTOR = "revops"
CONSOLE_CHANNEL = "C0CONSOLE"  # where a request made outside a channel is said to live


def parse_request_id(raw: str) -> int:
    request_id = as_id(raw)
    if request_id is None:
        raise UsageError(Text("a request is named by its number, such as #12; got ", Code(raw[:40])))
    return request_id


@dataclass
class Requested:
    """A new pending request, the account it is for and the balance when it was asked."""
    request: GrantRequest
    account: Any
    balance: int


@dataclass
class Decision:
    """What a click or command on a request came to.

    `outcome` is approved | rejected | cancelled, or a refusal: own_request (the requester
    tried to approve), not_requester (someone else tried to cancel), already_decided
    (decided before, or past its expiry). `expired_now`: this call found it past its time
    and marked it expired, so its message wants updating."""
    request: GrantRequest
    outcome: str
    expired_now: bool = False
    simulated: bool = False

    @property
    def refused(self) -> bool:
        return self.outcome in ("own_request", "not_requester", "already_decided")


async def cap_used(session: AsyncSession, account_id: str, now: datetime) -> tuple[int, int]:
    """Credits added to the account today (grants and positive adjustments) and still pending."""
    start = datetime.combine(now.date(), time(0), tzinfo=timezone.utc)
    granted = (await session.execute(
        select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.kind.in_(("grant", "adjustment")),
            LedgerEntry.delta > 0, LedgerEntry.at >= start, LedgerEntry.at < start + timedelta(days=1))
    )).scalar_one()
    pending = (await session.execute(
        select(func.coalesce(func.sum(GrantRequest.amount), 0)).where(
            GrantRequest.account_id == account_id, GrantRequest.status == "pending",
            GrantRequest.expires_at > now, GrantRequest.amount > 0, GrantRequest.dry_run.is_(False))
    )).scalar_one()
    return int(granted), int(pending)


async def lock_account(session: AsyncSession, account_id: str) -> None:
    """Hold the account's row until the transaction ends, so that the checks of the money limits and
    the change they allow are one step: on PostgreSQL `SELECT … FOR UPDATE` (a second request, or
    an approval, for the same account waits here until this one commits, then sees what it did);
    on SQLite the write transaction is already the only one (BEGIN IMMEDIATE), and SQLAlchemy
    renders no FOR UPDATE there."""
    await session.execute(select(Account.id).where(Account.id == account_id).with_for_update())


async def pending_of(session: AsyncSession, account_id: str, requester: str, now: datetime) -> int:
    """How many live (not expired, not rehearsal) requests this person has pending for the account."""
    return int((await session.execute(
        select(func.count()).select_from(GrantRequest).where(
            GrantRequest.account_id == account_id, GrantRequest.requester == requester,
            GrantRequest.status == "pending", GrantRequest.expires_at > now, GrantRequest.dry_run.is_(False))
    )).scalar_one())


async def request_change(session: AsyncSession, credits: CreditsSection, *, kind: str, account_ref: str,
                         amount: int, reason: str, actor: str, channel: str | None, now: datetime,
                         dry_run: bool) -> Requested:
    """Validate (account, amount, reason, balance, daily cap, the requester's pending requests),
    then store the pending request, all under the account's row lock. Nothing moves yet."""
    account = await ledger.resolve_account(session, account_ref)
    if account is None:
        raise UsageError(Text("no account matches ", Code(account_ref[:60]),
                              " (give an email, a cus_… id or an account id)"))
    await lock_account(session, account.id)
    reason = reason.strip()
    if not reason:
        raise UsageError("a reason is required")
    if kind == "grant" and not 1 <= amount <= credits.max_grant:
        raise UsageError(f"amount must be a whole number from 1 to {credits.max_grant} credits; got {amount}")
    if kind == "adjustment" and (amount == 0 or abs(amount) > credits.max_grant):
        raise UsageError(f"an adjustment must be non-zero and at most ±{credits.max_grant} credits; got {amount:+d}")
    if not dry_run:
        mine = await pending_of(session, account.id, actor, now)
        if mine >= credits.max_pending_per_requester:
            raise UsageError(
                Text(f"you already have {mine} pending request{'s' if mine != 1 else ''} for ", Code(account.id),
                     f" (at most {credits.max_pending_per_requester}); wait for a decision or cancel one"))
    current = await ledger.balance(session, account.id)
    if current + amount < 0:
        raise UsageError(Text("that adjustment would take ", Code(account.id),
                              f" below zero: the balance is {current} credits and the change is {amount:+d}"))
    if amount > 0:
        granted, pending = await cap_used(session, account.id, now)
        if granted + pending + amount > credits.daily_cap:
            raise UsageError(
                Text("daily cap: ", Code(account.id), f" has {granted} credits granted and {pending} pending today; "
                     f"{amount} more would exceed the cap of {credits.daily_cap} "
                     f"(at most {max(0, credits.daily_cap - granted - pending)} more today)"))
    req = GrantRequest(kind=kind, account_id=account.id, amount=amount, reason=reason, requester=actor,
                       channel=channel or CONSOLE_CHANNEL, status="pending", dry_run=dry_run,
                       created_at=now, expires_at=now + credits.approval_ttl)
    session.add(req)
    await session.flush()
    return Requested(req, account, current)


async def _load(session: AsyncSession, request_id: int) -> GrantRequest:
    req = await session.get(GrantRequest, request_id, populate_existing=True)
    if req is None:
        raise NotFound(f"there is no grant request #{request_id}")
    return req


async def _transition(session: AsyncSession, req: GrantRequest, status: str, *, actor: str, now: datetime,
                      note: str | None = None) -> bool:
    """pending → status, once. False when someone else decided first or it has expired."""
    result = await session.execute(
        update(GrantRequest)
        .where(GrantRequest.id == req.id, GrantRequest.status == "pending", GrantRequest.expires_at > now)
        .values(status=status, decided_by=actor, decided_at=now, decision_note=note)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def _no_transition(session: AsyncSession, req: GrantRequest, now: datetime) -> Decision:
    req = await _load(session, req.id)
    expired_now = False
    if req.status == "pending":  # still pending, so it is past its expiry: record that now
        expired_now = await expire_one(session, req, now)
    return Decision(req, "already_decided", expired_now=expired_now)


async def approve(session: AsyncSession, request_id: int, *, actor: str, now: datetime, dry_run: bool) -> Decision:
    """The approval, the ledger entry (unless simulated) and, by the router, the audit record: once."""
    req = await _load(session, request_id)
    if req.requester == actor:
        return Decision(req, "own_request")
    # The same lock a request takes: a request checking the cap waits for this approval to commit
    # (pending → granted in one step), so it never counts the credits as neither.
    await lock_account(session, req.account_id)
    if not await _transition(session, req, "approved", actor=actor, now=now):
        return await _no_transition(session, req, now)
    req = await _load(session, request_id)
    simulated = req.dry_run or dry_run
    if simulated:
        req.balance_after = await ledger.balance(session, req.account_id)
        req.dry_run = True
    else:
        entry = await ledger.append_entry(
            session, account_id=req.account_id, delta=req.amount, kind=req.kind, reason=req.reason,
            actor=actor, idempotency_key=f"grant-request:{req.id}", at=now, ref=req.ref,
        )
        req.ledger_entry_id = entry.id
        req.balance_after = entry.balance_after
    await session.flush()
    return Decision(req, "approved", simulated=simulated)


async def reject(session: AsyncSession, request_id: int, *, actor: str, now: datetime,
                 note: str | None = None) -> Decision:
    req = await _load(session, request_id)
    if not await _transition(session, req, "rejected", actor=actor, now=now, note=note):
        return await _no_transition(session, req, now)
    return Decision(await _load(session, request_id), "rejected")


async def cancel(session: AsyncSession, request_id: int, *, actor: str, now: datetime) -> Decision:
    """Only the requester may cancel their own pending request."""
    req = await _load(session, request_id)
    if req.requester != actor:
        return Decision(req, "not_requester")
    if not await _transition(session, req, "cancelled", actor=actor, now=now):
        return await _no_transition(session, req, now)
    return Decision(await _load(session, request_id), "cancelled")


def _pending(now: datetime):
    return (GrantRequest.status == "pending", GrantRequest.expires_at > now)


async def pending_requests(session: AsyncSession, now: datetime, limit: int = 25,
                           before: int | None = None) -> list[GrantRequest]:
    """The newest `limit` live pending requests (below request #`before`, when given), oldest first."""
    query = select(GrantRequest).where(*_pending(now))
    if before is not None:
        query = query.where(GrantRequest.id < before)
    newest = list((await session.execute(query.order_by(GrantRequest.id.desc()).limit(limit))).scalars().all())
    return newest[::-1]


async def count_pending(session: AsyncSession, now: datetime, before: int | None = None) -> int:
    query = select(func.count()).select_from(GrantRequest).where(*_pending(now))
    if before is not None:
        query = query.where(GrantRequest.id < before)
    return int((await session.execute(query)).scalar_one())


async def expire_one(session: AsyncSession, req: GrantRequest, now: datetime) -> bool:
    result = await session.execute(
        update(GrantRequest)
        .where(GrantRequest.id == req.id, GrantRequest.status == "pending", GrantRequest.expires_at <= now)
        .values(status="expired").execution_options(synchronize_session=False))
    if result.rowcount == 1:
        await session.refresh(req)
        return True
    return False


async def expire_overdue(session: AsyncSession, now: datetime, limit: int = 200) -> list[GrantRequest]:
    """Expire every pending request past its time (each once, whatever the number of workers) and
    audit it; returns the ones this call expired."""
    due = (await session.execute(
        select(GrantRequest).where(GrantRequest.status == "pending", GrantRequest.expires_at <= now)
        .order_by(GrantRequest.id).limit(limit))).scalars().all()
    expired = []
    for req in due:
        if not await expire_one(session, req, now):
            continue
        expired.append(req)
        await audit.append(session, at=now, actor=SYSTEM_ACTOR, command="grants.expire",
                           args={"request": req.id, "account": req.account_id, "amount": req.amount},
                           outcome="expired", channel=req.channel, surface="worker",
                           detail=f"request #{req.id} expired without a decision", subject=req.account_id)
    return expired
