"""Receivables (issue 18 item 3): the priority collection list from the mirror — open invoices
with money still owed, ranked by amount × days overdue — and what a reminder needs.

Domain code: returns rows (`Receivable`); `commands/receivables.py` makes the text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import UsageError
from bot.text import Code, Text

from .models import StripeCustomer, StripeInvoice, StripePayment

SCANNED = 5000  # open invoices read from the mirror at most (ranked in Python)


@dataclass
class Receivable:
    invoice: StripeInvoice
    customer: StripeCustomer | None
    days_overdue: int
    last_failure: str | None

    @property
    def amount(self) -> int:
        return int(self.invoice.amount_remaining or self.invoice.amount_due or 0)

    @property
    def priority(self) -> int:
        return self.amount * max(self.days_overdue, 0)

    @property
    def resendable(self) -> bool:
        return self.invoice.collection_method == "send_invoice"


def parse_amount(raw: str | None) -> int | None:
    """`--min 250` or `--min 250.50`: major units, as minor units (cents)."""
    if raw is None:
        return None
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0 or value > Decimal(10) ** 12:
        raise UsageError(Text("--min takes an amount such as ", Code("250"), " or ", Code("99.50"), "; got ",
                              Code(raw[:40])))
    return int(value * 100)


def due_of(row: StripeInvoice) -> datetime | None:
    """When the invoice fell due: its due date (send_invoice), else when it was created (charged
    automatically: owed from the first attempt)."""
    return row.due_date or row.invoice_created


def days_overdue(row: StripeInvoice, now: datetime) -> int:
    due = due_of(row)
    if due is None:
        return 0
    return max(0, (now - due).days)


async def receivables(session: AsyncSession, now: datetime, *, min_amount: int | None = None,
                      overdue: timedelta | None = None, limit: int = 20) -> tuple[list[Receivable], int]:
    """Open invoices with an amount remaining, ranked by amount × days overdue (ties: the larger
    amount, then the older); the first `limit` and how many matched."""
    query = select(StripeInvoice).where(StripeInvoice.status == "open", StripeInvoice.amount_remaining > 0)
    if min_amount is not None:
        query = query.where(StripeInvoice.amount_remaining >= min_amount)
    rows = list((await session.execute(query.limit(SCANNED))).scalars().all())
    if overdue is not None:
        rows = [r for r in rows if (due := due_of(r)) is not None and now - due >= overdue]
    ranked = sorted(rows, key=lambda r: (-(r.amount_remaining * days_overdue(r, now)), -r.amount_remaining,
                                         due_of(r) or now, r.id))
    shown = ranked[:limit]
    customers = {c.id: c for c in (await session.execute(
        select(StripeCustomer).where(StripeCustomer.id.in_({r.customer_id for r in shown if r.customer_id}))
    )).scalars().all()} if shown else {}
    failures: dict[str, str] = {}
    if shown:
        for p in (await session.execute(
                select(StripePayment).where(StripePayment.invoice_id.in_([r.id for r in shown]),
                                            StripePayment.failure.is_not(None))
                .order_by(StripePayment.updated_at))).scalars().all():
            failures[p.invoice_id] = p.failure
    out = [Receivable(r, customers.get(r.customer_id), days_overdue(r, now), failures.get(r.id)) for r in shown]
    return out, len(ranked)


async def one(session: AsyncSession, invoice_id: str, now: datetime) -> Receivable | None:
    row = await session.get(StripeInvoice, invoice_id)
    if row is None:
        return None
    customer = await session.get(StripeCustomer, row.customer_id) if row.customer_id else None
    failure = (await session.execute(
        select(StripePayment.failure).where(StripePayment.invoice_id == invoice_id, StripePayment.failure.is_not(None))
        .order_by(StripePayment.updated_at.desc()).limit(1))).scalar_one_or_none()
    return Receivable(row, customer, days_overdue(row, now), failure)
