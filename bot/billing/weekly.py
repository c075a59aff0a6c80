"""The weekly reconciliation (billing runbook): credits spent per account this week against the
week before (the top spenders, and every account whose use rose by more than `[reconcile]
usage_jump`), and paid-invoice revenue per UTC day, the mirror against Stripe's paid invoices.

Returns data (`WeeklyReport`, `DaySync`); `weekly_views.py` renders it for `reconcile --weekly`
and for the scheduler's weekly post. Stripe is read before the session's first statement (no
network call inside a unit of work). A day is an invoice's creation day (`created`, the field
Stripe's invoice listing filters on; the mirror keeps it as `invoice_created`), on both sides.

`sync_day` re-fetches one day's invoices from Stripe into the mirror through the mirror's one
store path (`mirror.upsert_invoice`, as `sync` and the event handlers write invoices)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .mirror import MirrorChange, ts, upsert_invoice
from .models import LedgerEntry, StripeInvoice
from .stripe_client import StripeClient

WEEK = timedelta(days=7)
REVENUE_DAYS = 14  # this week's days and the previous week's
TOP = 10
USAGE_KIND = "claim"  # what an account spends its credits on (ledger.py)


@dataclass(frozen=True)
class AccountUsage:
    account_id: str
    this_week: int  # credits spent (positive)
    previous_week: int

    def jumped(self, factor: float) -> bool:
        """Rose by more than `factor` times last week's use (an account with none last week is
        not a jump: a first week of use is no rise to compare; the top spenders show it)."""
        return self.previous_week > 0 and self.this_week > factor * self.previous_week


@dataclass(frozen=True)
class DayRevenue:
    day: str  # YYYY-MM-DD (UTC)
    currency: str
    stripe: int  # minor units
    mirror: int
    stripe_count: int
    mirror_count: int

    @property
    def differs(self) -> bool:
        return self.stripe != self.mirror or self.stripe_count != self.mirror_count

    @property
    def difference(self) -> int:
        return self.stripe - self.mirror


@dataclass
class WeeklyReport:
    now: datetime
    week_start: datetime  # this week: [week_start, now)
    usage_jump: float
    top: list[AccountUsage]  # this week's biggest spenders, at most TOP
    jumps: list[AccountUsage]  # every account that jumped, biggest rise first
    accounts_used: int  # accounts that spent credits this week
    spent_this_week: int
    spent_previous_week: int
    revenue_since: datetime  # the first day's midnight
    days: list[DayRevenue] = field(default_factory=list)  # days with revenue on either side, oldest first

    @property
    def differing_days(self) -> list[DayRevenue]:
        return [d for d in self.days if d.differs]


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def revenue_window(now: datetime) -> tuple[datetime, datetime]:
    """The revenue days compared: from the midnight REVENUE_DAYS - 1 days before today's, to now."""
    today = now.astimezone(timezone.utc).date()
    return day_start(today) - timedelta(days=REVENUE_DAYS - 1), now


def _created(invoice: dict[str, Any]) -> datetime | None:
    return ts(invoice.get("created"))


def _in(invoice: dict[str, Any], since: datetime, until: datetime) -> bool:
    created = _created(invoice)
    return created is not None and since <= created < until


async def stripe_paid_invoices(stripe: StripeClient, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Stripe's paid invoices created in [since, until) (listed with Stripe's own filters, and
    checked here too)."""
    listed = await stripe.list("invoice", status="paid",
                               created={"gte": int(since.timestamp()), "lt": int(until.timestamp())})
    return [inv for inv in listed if inv.get("status") == "paid" and _in(inv, since, until)]


async def _spent(session: AsyncSession, since: datetime, until: datetime) -> dict[str, int]:
    rows = await session.execute(
        select(LedgerEntry.account_id, func.sum(LedgerEntry.delta))
        .where(LedgerEntry.kind == USAGE_KIND, LedgerEntry.delta < 0, LedgerEntry.at >= since, LedgerEntry.at < until)
        .group_by(LedgerEntry.account_id))
    return {account: -int(total) for account, total in rows if total}


async def _mirror_paid(session: AsyncSession, since: datetime, until: datetime) -> list[StripeInvoice]:
    return list((await session.execute(
        select(StripeInvoice).where(StripeInvoice.status == "paid", StripeInvoice.invoice_created >= since,
                                    StripeInvoice.invoice_created < until))).scalars())


def _per_day(items: list[tuple[datetime, str, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for created, currency, amount in items:
        slot = out[(f"{created.astimezone(timezone.utc):%Y-%m-%d}", currency)]
        slot[0] += amount
        slot[1] += 1
    return {key: (total, count) for key, (total, count) in out.items()}


async def compare(session: AsyncSession, stripe_paid: list[dict[str, Any]], *, now: datetime,
                  usage_jump: float) -> WeeklyReport:
    week_start = now - WEEK
    this_week = await _spent(session, week_start, now)
    previous = await _spent(session, week_start - WEEK, week_start)
    usage = [AccountUsage(a, this_week.get(a, 0), previous.get(a, 0)) for a in set(this_week) | set(previous)]
    top = sorted((u for u in usage if u.this_week > 0), key=lambda u: (-u.this_week, u.account_id))[:TOP]
    jumps = sorted((u for u in usage if u.jumped(usage_jump)),
                   key=lambda u: (-u.this_week / u.previous_week, u.account_id))
    since, until = revenue_window(now)
    stripe_days = _per_day([(_created(inv), (inv.get("currency") or "?").lower(), int(inv.get("amount_paid") or 0))
                            for inv in stripe_paid if _in(inv, since, until)])
    mirror_days = _per_day([(row.invoice_created, (row.currency or "?").lower(), int(row.amount_paid or 0))
                            for row in await _mirror_paid(session, since, until)])
    days = []
    for day, currency in sorted(set(stripe_days) | set(mirror_days)):
        (stripe_total, stripe_count), (mirror_total, mirror_count) = (
            stripe_days.get((day, currency), (0, 0)), mirror_days.get((day, currency), (0, 0)))
        days.append(DayRevenue(day, currency, stripe_total, mirror_total, stripe_count, mirror_count))
    return WeeklyReport(now=now, week_start=week_start, usage_jump=usage_jump, top=top, jumps=jumps,
                        accounts_used=sum(1 for u in usage if u.this_week > 0),
                        spent_this_week=sum(this_week.values()), spent_previous_week=sum(previous.values()),
                        revenue_since=since, days=days)


async def weekly(session: AsyncSession, stripe: StripeClient, *, now: datetime, usage_jump: float) -> WeeklyReport:
    """`reconcile --weekly`: Stripe first, then the database."""
    since, until = revenue_window(now)
    paid = await stripe_paid_invoices(stripe, since, until)
    return await compare(session, paid, now=now, usage_jump=usage_jump)


async def weekly_report(services) -> WeeklyReport:
    """The scheduler's weekly post: Stripe is read before the read unit opens. Raises
    UpstreamError when Stripe fails (`weekly_views.weekly_reconcile` says so)."""
    now = services.clock.now()
    since, until = revenue_window(now)
    paid = await stripe_paid_invoices(services.stripe, since, until)
    async with services.db.reading() as session:
        return await compare(session, paid, now=now,
                             usage_jump=services.settings.cfg.reconcile.usage_jump)


# -- Sync: one day's invoices from Stripe into the mirror ------------------------------------------


@dataclass
class DaySync:
    day: date
    changes: list[MirrorChange]
    unknown: list[str]  # paid in the mirror that day, and Stripe has no invoice of that day by that id

    @property
    def changed(self) -> list[MirrorChange]:
        return [c for c in self.changes if c.changed]


def parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value.strip()) if len(value.strip()) == 10 else None
    except ValueError:
        return None


async def sync_day(session: AsyncSession, stripe: StripeClient, day: date, *, now: datetime) -> DaySync:
    """Every invoice Stripe has created that day (any status: a mirror's 'paid' that Stripe says
    otherwise is corrected too), fetched first; then each paid one, and each the mirror holds as
    paid that day, is written to the mirror as Stripe has it (forced: Stripe's present state)."""
    start = day_start(day)
    end = start + timedelta(days=1)
    listed = await stripe.list("invoice", created={"gte": int(start.timestamp()), "lt": int(end.timestamp())})
    of_day = {inv["id"]: inv for inv in listed if _in(inv, start, end)}
    mirror_paid = {row.id for row in await _mirror_paid(session, start, end)}
    version = int(now.timestamp())
    changes = []
    for invoice_id, inv in sorted(of_day.items()):
        if inv.get("status") == "paid" or invoice_id in mirror_paid:
            changes.append(await upsert_invoice(session, inv, version=version, at=now, force=True))
    return DaySync(day, changes, sorted(mirror_paid - set(of_day)))
