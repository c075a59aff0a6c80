"""CSV exports (issue 18 item 4; the SaaS ops runbook's "Data Exports: Customers or Payments, CSV").

`table(...)` reads one kind of record from the mirror, the ledger, the audit log or the webhook log
and returns plain data (a header and rows); `to_csv` writes RFC 4180 (Python's csv module, CRLF
line ends, UTF-8, one header row); `store` keeps the file for its signed link until it expires.

What never leaves: secrets (no table here holds one), event payloads and card data (only the
columns listed below are read; a run of 13-19 digits in free text is masked), and emails unless
`[exports] include_email` is true — the `email` column is then present but blank, and emails in
free text (audit arguments, reasons) are replaced by "[email]". A text cell starting with = + - @
or a tab / carriage return is prefixed with ' so a spreadsheet does not read it as a formula
(numbers are written as numbers, so a negative delta stays -30).
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import AuditRecord
from .export_models import Export
from .models import Account, LedgerEntry, StripeCustomer, StripeEvent, StripeInvoice, StripePayment

KINDS = ("customers", "payments", "invoices", "ledger", "audit", "events")
DEFAULT_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=90)
EXPORT_TTL = timedelta(hours=24)  # the file and its signed link
MAX_ROWS = 50_000  # newest first beyond this; the reply says when it was cut

# Stripe's zero- and three-decimal currencies (stripe.com/docs/currencies); every other has two.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Table:
    kind: str
    header: list[str]
    rows: list[list[Any]]
    total: int  # rows in the window (more than len(rows) when cut at MAX_ROWS)


def decimal(amount: int | None, currency: str | None) -> str:
    """Minor units as a decimal string in the currency's own exponent ("49.00", "4900" for JPY)."""
    if amount is None:
        return ""
    cur = (currency or "").lower()
    places = 0 if cur in ZERO_DECIMAL else 3 if cur in THREE_DECIMAL else 2
    if places == 0:
        return str(amount)
    sign, value = ("-" if amount < 0 else ""), abs(amount)
    return f"{sign}{value // 10 ** places}.{value % 10 ** places:0{places}d}"


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(amount: int | None, currency: str | None) -> list[Any]:
    return [amount if amount is not None else "", decimal(amount, currency)]


async def table(session: AsyncSession, kind: str, since: datetime, *, include_email: bool) -> Table:
    """The rows of one kind changed or recorded since `since`, oldest first (data, no CSV yet)."""
    def email(value: str | None) -> str:
        return (value or "") if include_email else ""

    def text(value: Any) -> str:
        if value is None:
            return ""
        value = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        value = _CARD.sub("[number]", value)
        return value if include_email else _EMAIL.sub("[email]", value)

    if kind == "customers":
        header = ["id", "name", "email", "account_id", "deleted", "updated_at"]
        stmt = select(StripeCustomer).where(StripeCustomer.updated_at >= since).order_by(StripeCustomer.updated_at,
                                                                                        StripeCustomer.id)
        rows = [[c.id, text(c.name), email(c.email), c.account_id or "", c.deleted, iso(c.updated_at)]
                for c in await _newest(session, stmt)]
    elif kind == "payments":
        header = ["id", "customer_id", "invoice_id", "charge_id", "status", "currency", "amount_minor", "amount",
                  "amount_refunded_minor", "amount_refunded", "failure", "updated_at"]
        stmt = select(StripePayment).where(StripePayment.updated_at >= since).order_by(StripePayment.updated_at,
                                                                                      StripePayment.id)
        rows = [[p.id, p.customer_id or "", p.invoice_id or "", p.charge_id or "", p.status or "",
                 (p.currency or "").upper(), *_money(p.amount, p.currency), *_money(p.amount_refunded, p.currency),
                 text(p.failure), iso(p.updated_at)] for p in await _newest(session, stmt)]
    elif kind == "invoices":
        header = ["id", "customer_id", "subscription_id", "status", "currency", "amount_due_minor", "amount_due",
                  "amount_paid_minor", "amount_paid", "amount_remaining_minor", "amount_remaining",
                  "attempt_count", "collection_method", "created", "due_date", "updated_at"]
        stmt = select(StripeInvoice).where(StripeInvoice.updated_at >= since).order_by(StripeInvoice.updated_at,
                                                                                      StripeInvoice.id)
        rows = [[i.id, i.customer_id or "", i.subscription_id or "", i.status or "", (i.currency or "").upper(),
                 *_money(i.amount_due, i.currency), *_money(i.amount_paid, i.currency),
                 *_money(i.amount_remaining, i.currency), i.attempt_count, i.collection_method or "",
                 iso(i.invoice_created), iso(i.due_date), iso(i.updated_at)] for i in await _newest(session, stmt)]
    elif kind == "ledger":
        # Credits are units, not money: one column each for the delta and the balance after it.
        header = ["id", "at", "account_id", "email", "kind", "delta", "balance_after", "reason", "actor", "ref"]
        stmt = (select(LedgerEntry, Account.email).join(Account, Account.id == LedgerEntry.account_id, isouter=True)
                .where(LedgerEntry.at >= since).order_by(LedgerEntry.at, LedgerEntry.id))
        rows = [[e.id, iso(e.at), e.account_id, email(mail), e.kind, e.delta, e.balance_after, text(e.reason),
                 e.actor, e.ref or ""] for e, mail in await _newest(session, stmt, scalars=False)]
    elif kind == "audit":
        header = ["id", "at", "actor", "command", "outcome", "channel", "surface", "subject", "detail", "args"]
        stmt = select(AuditRecord).where(AuditRecord.at >= since).order_by(AuditRecord.at, AuditRecord.id)
        rows = [[r.id, iso(r.at), r.actor, r.command, r.outcome, r.channel or "", r.surface, text(r.subject),
                 text(r.detail), text(r.args)] for r in await _newest(session, stmt)]
    elif kind == "events":
        # Never the payload: Stripe objects carry billing details and card metadata.
        header = ["id", "type", "created", "received_at", "status", "object_id", "customer_id", "livemode",
                  "source", "attempts", "detail", "error"]
        stmt = select(StripeEvent).where(StripeEvent.received_at >= since).order_by(StripeEvent.received_at,
                                                                                   StripeEvent.id)
        rows = [[e.id, e.type, iso(e.created), iso(e.received_at), e.status, e.object_id or "", e.customer_id or "",
                 e.livemode, e.source, e.attempts, text(e.detail), text(e.error)]
                for e in await _newest(session, stmt)]
    else:
        raise ValueError(kind)
    total = len(rows)
    return Table(kind, header, rows[-MAX_ROWS:], total)


async def _newest(session: AsyncSession, stmt, scalars: bool = True) -> list:
    result = await session.execute(stmt)
    return list(result.scalars().all() if scalars else result.all())


def cell(value: Any) -> Any:
    """A CSV cell: booleans as true/false, numbers as they are, text neutralised against formulas."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    value = str(value)
    return "'" + value if value.startswith(_FORMULA) else value


def to_csv(t: Table) -> str:
    """RFC 4180: comma, double quotes where needed, CRLF; the header first."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, dialect="excel", lineterminator="\r\n")
    writer.writerow(t.header)
    writer.writerows([cell(v) for v in row] for row in t.rows)
    return out.getvalue()


def path_of(export_id: str) -> str:
    return f"/exports/{export_id}.csv"


async def store(session: AsyncSession, t: Table, content: str, *, actor: str, channel: str | None,
                since: datetime, now: datetime) -> Export:
    """Keep the file for its link (and prune the ones whose time is up, in the same transaction)."""
    await session.execute(delete(Export).where(Export.expires_at < now))
    export_id = secrets.token_hex(16)
    export = Export(id=export_id, kind=t.kind, actor=actor, channel=channel, since=since, created_at=now,
                    expires_at=now + EXPORT_TTL, rows=len(t.rows),
                    filename=f"revops-{t.kind}-{now:%Y%m%d-%H%M%S}.csv", content=content)
    session.add(export)
    await session.flush()
    return export


async def find(session: AsyncSession, export_id: str, now: datetime) -> Export | None:
    export = await session.get(Export, export_id)
    if export is None or export.expires_at < now:
        return None
    return export
