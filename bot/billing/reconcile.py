"""Stripe against the local mirror: active subscriptions on both sides, events Stripe has that
the bot never stored ("missed", auto-paginated), per-day event counts, and data freshness.

Returns data (`ReconcileReport`, `ReplaySummary`); `views.py` renders it for the `reconcile`
command and for the scheduler's daily post (`views.daily_reconcile(services) -> Reply`, posted
to the incident channel with `outbox.post_automated`, which holds it in panic mode).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import StripeEvent, StripeSubscription
from .stripe_client import StripeClient
from .events import Result, store_and_apply
from .fetch import CREDIT_EVENTS, prepare_all
from .intake import storable
from .policy import ACCEPT_ALL, EventPolicy

STALE_AFTER = timedelta(hours=24)

# Among events of the same second, apply parents before children.
_TYPE_ORDER = ("customer.created", "customer.updated", "customer.subscription", "invoice", "checkout", "charge",
               "customer.deleted")


def event_order(event: dict[str, Any]) -> tuple[int, int]:
    kind = event.get("type", "")
    rank = next((i for i, prefix in enumerate(_TYPE_ORDER) if kind.startswith(prefix)), len(_TYPE_ORDER))
    return int(event.get("created") or 0), rank


@dataclass
class StripeSide:
    since: datetime
    until: datetime
    active: set[str]
    events: list[dict[str, Any]]


@dataclass
class ReconcileReport:
    since: datetime
    until: datetime
    days: int
    stripe_active: set[str]
    local_active: set[str]
    missed: list[dict[str, Any]]
    stripe_per_day: dict[str, int]
    local_per_day: dict[str, int]
    newest_received: datetime | None
    now: datetime
    notes: list[str] = field(default_factory=list)
    # Paid checkouts whose credits could not be added (a guest checkout no account matches, …): (event, reason)
    uncredited: list[tuple[str, str]] = field(default_factory=list)

    @property
    def only_stripe(self) -> list[str]:
        return sorted(self.stripe_active - self.local_active)

    @property
    def only_local(self) -> list[str]:
        return sorted(self.local_active - self.stripe_active)

    @property
    def stale(self) -> bool:
        return self.newest_received is None or self.now - self.newest_received > STALE_AFTER

    @property
    def in_step(self) -> bool:
        return not (self.only_stripe or self.only_local or self.missed or self.stale or self.uncredited)


async def fetch_stripe_side(stripe: StripeClient, since: datetime, until: datetime) -> StripeSide:
    active = {s["id"] for s in await stripe.list("subscription", status="active")}
    events = await stripe.events_between(since, until)
    return StripeSide(since, until, active, events)


async def stored_ids(session: AsyncSession, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        found.update((await session.execute(select(StripeEvent.id).where(StripeEvent.id.in_(chunk)))).scalars())
    return found


async def missed_events(session: AsyncSession, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    known = await stored_ids(session, [e["id"] for e in events])
    return sorted((e for e in events if e["id"] not in known), key=event_order)


def _day(value: datetime) -> str:
    return f"{value:%Y-%m-%d}"


async def compare(session: AsyncSession, side: StripeSide, *, now: datetime, days: int) -> ReconcileReport:
    local_active = set((await session.execute(
        select(StripeSubscription.id).where(StripeSubscription.status == "active"))).scalars())
    missed = await missed_events(session, side.events)
    stripe_per_day = Counter(_day(datetime.fromtimestamp(int(e["created"]), tz=side.since.tzinfo)) for e in side.events)
    rows = await session.execute(select(StripeEvent.created).where(StripeEvent.created >= side.since,
                                                                   StripeEvent.created <= side.until))
    local_per_day = Counter(_day(created) for (created,) in rows)
    newest = (await session.execute(select(func.max(StripeEvent.received_at)))).scalar()
    uncredited = [(event_id, error or "") for event_id, error in await session.execute(
        select(StripeEvent.id, StripeEvent.error).where(
            StripeEvent.type.in_(CREDIT_EVENTS), StripeEvent.status == "failed",
            StripeEvent.received_at >= side.since).order_by(StripeEvent.received_at).limit(50))]
    return ReconcileReport(side.since, side.until, days, side.active, local_active, missed, dict(stripe_per_day),
                           dict(local_per_day), newest, now, uncredited=uncredited)


async def reconcile(session: AsyncSession, stripe: StripeClient, *, now: datetime, days: int) -> ReconcileReport:
    side = await fetch_stripe_side(stripe, now - timedelta(days=days), now)
    return await compare(session, side, now=now, days=days)


@dataclass
class ReplaySummary:
    results: list[Result]

    def counts(self) -> Counter:
        return Counter(r.status for r in self.results)


async def replay_missed(session: AsyncSession, stripe: StripeClient, *, since: datetime, until: datetime,
                        now: datetime, policy: EventPolicy = ACCEPT_ALL) -> ReplaySummary:
    """Fetch the window's events from Stripe (all of them, and what applying them needs, before
    writing anything) and store and apply the ones never stored, oldest first."""
    events = [storable(event, now) for event in await stripe.events_between(since, until)]
    events = await prepare_all(stripe, events, policy)
    return ReplaySummary(await store_and_apply(session, await missed_events(session, events), source="reconcile",
                                               now=now, policy=policy))


async def daily_report(services, days: int = 1) -> ReconcileReport:
    """The scheduler's daily reconcile of the last `days`: Stripe is read before the database
    transaction opens. Raises UpstreamError when Stripe fails (`views.daily_reconcile` says so)."""
    now = services.clock.now()
    side = await fetch_stripe_side(services.stripe, now - timedelta(days=days), now)
    async with services.db.transaction() as session:
        return await compare(session, side, now=now, days=days)
