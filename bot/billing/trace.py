"""What the bot knows about one Stripe id or account, and the webhook log.

`webhook_log` is the `events` list: stored Stripe events newest first, filtered by status, type
and window, with the reason stored for failed and ignored ones. `trace` follows one id (an
event, a Checkout Session, a PaymentIntent, a charge, an invoice, a subscription, a customer,
an account or its email) through everything stored about it — webhook deliveries and their
outcome, the mirror rows as they stand, ledger entries, lineage checks, audit records, incident
timeline entries — in time order. `aliases` is every name of the account a reference names
(its id, its `cus_…`, its email): the billing family's answer to `audit <account>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.incidents.models import TimelineEntry
from bot.models import AuditRecord

from . import ledger
from .models import (LedgerEntry, LineageCheck, StripeCustomer, StripeEvent, StripeInvoice, StripePayment,
                     StripeSubscription)

PER_SOURCE = 200  # rows read from each source; the command shows the newest of them all
_STRIPE_PREFIXES = ("evt_", "cs_", "pi_", "in_", "ch_", "sub_", "cus_", "py_", "re_", "dp_", "acct_")


# --- the webhook log -------------------------------------------------------------------------------

@dataclass
class Page:
    rows: list[Any]
    total: int  # how many match, of which `rows` are the newest


async def webhook_log(session: AsyncSession, *, status: str | None, event_type: str | None, since: datetime,
                      limit: int) -> Page:
    """Stored events received since `since`, newest first; `event_type` exact, or a prefix ending in `.`/`*`."""
    where = [StripeEvent.received_at >= since]
    if status:
        where.append(StripeEvent.status == status)
    if event_type:
        prefix = event_type.rstrip("*")
        where.append(StripeEvent.type.startswith(prefix, autoescape=True) if prefix != event_type
                     or event_type.endswith(".") else StripeEvent.type == event_type)
    total = (await session.execute(select(func.count()).select_from(StripeEvent).where(*where))).scalar_one()
    columns = (StripeEvent.id, StripeEvent.type, StripeEvent.status, StripeEvent.detail, StripeEvent.error,
               StripeEvent.object_id, StripeEvent.source, StripeEvent.attempts, StripeEvent.received_at,
               StripeEvent.account)
    rows = (await session.execute(select(*columns).where(*where)
                                  .order_by(StripeEvent.received_at.desc(), StripeEvent.id.desc())
                                  .limit(limit))).all()
    return Page(list(rows), total)


# --- aliases ---------------------------------------------------------------------------------------

async def _account_of(session: AsyncSession, ref: str):
    """The account `ref` names: by ledger.find_account, or a mirrored customer's linked account."""
    account = await ledger.find_account(session, ref)
    if account is None and ref.startswith("cus_"):
        customer = await session.get(StripeCustomer, ref)
        if customer is not None and customer.account_id:
            account = await ledger.find_account(session, customer.account_id)
    return account


def _names(account) -> set[str]:
    return {name for name in (account.id, account.stripe_customer_id, account.email) if name}


async def aliases(session: AsyncSession, ref: str) -> set[str]:
    """Every name of the account `ref` names (account id, `cus_…`, email), `ref` itself included."""
    account = await _account_of(session, ref)
    return {ref} | (_names(account) if account is not None else set())


# --- trace -----------------------------------------------------------------------------------------

@dataclass
class Entry:
    at: datetime
    source: str  # webhook | mirror | ledger | lineage | audit | timeline
    ref: str  # the row's own id (evt_…, in_…, #12…)
    what: str  # a plain sentence
    outcome: str | None = None  # processed | failed | ignored | violated | …
    actor: str | None = None


@dataclass
class Trace:
    ref: str
    names: list[str]  # every id followed
    entries: list[Entry]  # oldest first
    capped: bool  # some source had more than PER_SOURCE rows


async def _related(session: AsyncSession, ref: str) -> tuple[set[str], set[str]]:
    """The ids one hop from `ref` (an event's object, a payment's invoice and charge, a session's
    payment intent) and the account ids it names; a customer is followed only from an account."""
    ids = {ref}
    accounts: set[str] = set()
    if ref.startswith("evt_"):
        event = await session.get(StripeEvent, ref)
        if event is not None and event.object_id:
            ids.add(event.object_id)
    account = await _account_of(session, ref)
    if account is not None:
        ids |= _names(account)
        accounts.add(account.id)
    sessions = [i for i in ids if i.startswith("cs_")]
    if sessions:  # a Checkout Session's payment intent (the purchase's ledger ref)
        for (payload,) in (await session.execute(select(StripeEvent.payload).where(
                StripeEvent.object_id.in_(sessions)).limit(20))).all():
            obj = ((payload or {}).get("data") or {}).get("object") or {}
            intent = obj.get("payment_intent")
            intent = intent.get("id") if isinstance(intent, dict) else intent
            if isinstance(intent, str) and intent:
                ids.add(intent)
    payments = (await session.execute(select(StripePayment).where(or_(
        StripePayment.id.in_(ids), StripePayment.charge_id.in_(ids), StripePayment.invoice_id.in_(ids)))
        .limit(20))).scalars().all()
    for payment in payments:
        ids |= {i for i in (payment.id, payment.charge_id, payment.invoice_id) if i}
    return ids, accounts


async def trace(session: AsyncSession, ref: str) -> Trace:
    """Everything stored about `ref`, oldest first (each source read up to PER_SOURCE rows, newest)."""
    ids, accounts = await _related(session, ref)
    entries: list[Entry] = []
    capped = False

    event_where = [StripeEvent.id.in_(ids), StripeEvent.object_id.in_(ids), StripeEvent.customer_id.in_(ids)]
    connected = [i for i in ids if i.startswith("acct_")]
    if connected:  # a connected account's events (the column is not indexed: only when asked)
        event_where.append(StripeEvent.account.in_(connected))
    events = (await session.execute(select(StripeEvent).where(or_(*event_where))
        .order_by(StripeEvent.received_at.desc()).limit(PER_SOURCE))).scalars().all()
    capped |= len(events) == PER_SOURCE
    for e in events:
        reason = e.detail or e.error or ""
        entries.append(Entry(e.received_at, "webhook", e.id,
                             f"{e.type} ({e.object_id or 'no object'}) from {e.source}"
                             + (f", {e.attempts} attempts" if e.attempts > 1 else "")
                             + (f": {reason}" if reason else ""), e.status))
    event_ids = [e.id for e in events]
    if event_ids:
        checks = (await session.execute(select(LineageCheck).where(LineageCheck.event_id.in_(event_ids))
                                        .order_by(LineageCheck.at.desc()).limit(PER_SOURCE))).scalars().all()
        for c in checks:
            entries.append(Entry(c.at, "lineage", c.event_id, f"invariant {c.invariant}"
                                 + (f": {c.detail}" if c.detail else " holds"), "passed" if c.ok else "violated"))

    for model, describe in _MIRROR:
        # by its id; a customer's subscriptions, invoices and payments when the customer is followed
        rows = (await session.execute(select(model).where(or_(model.id.in_(ids), *(
            [model.customer_id.in_(ids)] if hasattr(model, "customer_id") else [])))
                                      .order_by(model.updated_at.desc()).limit(PER_SOURCE))).scalars().all()
        capped |= len(rows) == PER_SOURCE
        for row in rows:
            entries.append(Entry(row.updated_at, "mirror", row.id, describe(row)))

    ledger_where = [LedgerEntry.ref.in_(ids)]
    if accounts:
        ledger_where.append(LedgerEntry.account_id.in_(accounts))
    ledger_rows = (await session.execute(select(LedgerEntry).where(or_(*ledger_where))
                                         .order_by(LedgerEntry.at.desc()).limit(PER_SOURCE))).scalars().all()
    capped |= len(ledger_rows) == PER_SOURCE
    for l in ledger_rows:
        entries.append(Entry(l.at, "ledger", l.account_id, f"{l.delta:+d} {l.kind} on {l.account_id}: {l.reason} "
                             f"(balance {l.balance_after})", l.kind, l.actor))

    records = (await session.execute(select(AuditRecord).where(AuditRecord.subject.in_(ids))
                                     .order_by(AuditRecord.id.desc()).limit(PER_SOURCE))).scalars().all()
    capped |= len(records) == PER_SOURCE
    for r in records:
        entries.append(Entry(r.at, "audit", f"#{r.id}", f"{r.command} on {r.subject}"
                             + (f": {r.detail}" if r.detail else ""), r.outcome, r.actor))

    stripe_ids = [i for i in ids if i.startswith(_STRIPE_PREFIXES) or i in accounts]
    if stripe_ids:
        timeline = (await session.execute(select(TimelineEntry).where(or_(*[
            TimelineEntry.text.contains(i, autoescape=True) for i in stripe_ids[:20]]))
            .order_by(TimelineEntry.at.desc()).limit(PER_SOURCE))).scalars().all()
        capped |= len(timeline) == PER_SOURCE
        for t in timeline:
            entries.append(Entry(t.at, "timeline", f"incident #{t.incident_id}", f"{t.kind}: {t.text}",
                                 None, t.actor))

    entries.sort(key=lambda entry: (entry.at, _ORDER.get(entry.source, 9)))
    return Trace(ref, sorted(ids), entries, capped)


_ORDER = {"webhook": 0, "lineage": 1, "mirror": 2, "ledger": 3, "audit": 4, "timeline": 5}


def _money(amount: int | None, currency: str | None) -> str:
    return f"{(amount or 0) / 100:,.2f} {(currency or '').upper()}".strip()


_MIRROR = (
    (StripeCustomer, lambda c: f"customer {c.id} now {c.email or 'no email'}"
                               + (f", account {c.account_id}" if c.account_id else "") + (" (deleted)" if c.deleted else "")),
    (StripeSubscription, lambda s: f"subscription {s.id} now {s.status}, {s.plan or 'no plan'}"
                                   + (", cancels at period end" if s.cancel_at_period_end else "")),
    (StripeInvoice, lambda i: f"invoice {i.id} now {i.status or 'unknown'}: {_money(i.amount_paid, i.currency)} paid "
                              f"of {_money(i.amount_due, i.currency)}, {i.attempt_count} attempts"
                              + (", payment failed" if i.payment_failed else "")),
    (StripePayment, lambda p: f"payment {p.id} now {p.status or 'unknown'}: {_money(p.amount, p.currency)}"
                              + (f", invoice {p.invoice_id}" if p.invoice_id else "")
                              + (f", {_money(p.amount_refunded, p.currency)} refunded" if p.amount_refunded else "")
                              + (f", {len(p.disputes)} dispute(s)" if p.disputes else "")
                              + (f", last failure: {p.failure}" if p.failure else "")),
)
