"""The billing mirror: customers, subscriptions and invoices as Stripe last told us.

Each row keeps `version`, the Stripe time (epoch seconds) of the state it holds: an event
applies only when it is at least as new, so an older event never overwrites newer state.
`sync_*` pull the objects from Stripe, overwrite the rows whatever their version, and
return what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .ledger import account_row, link_account
from .models import Account, StripeCustomer, StripeInvoice, StripeSubscription
from .sqlutil import insert_ignore, insert_new
from .stripe_client import StripeClient


@dataclass
class MirrorChange:
    """What one upsert did: created, changed (field: old → new), unchanged, or skipped as stale."""

    object_id: str
    kind: str  # customer | subscription | invoice
    created: bool = False
    stale: bool = False
    changes: list[str] = field(default_factory=list)

    def sentence(self) -> str:
        if self.stale:
            return f"{self.kind} {self.object_id}: newer state already mirrored; not applied"
        if self.created:
            return f"{self.kind} {self.object_id}: added to the mirror"
        if self.changes:
            return f"{self.kind} {self.object_id}: " + "; ".join(self.changes)
        return f"{self.kind} {self.object_id}: unchanged"

    @property
    def changed(self) -> bool:
        return self.created or bool(self.changes)


def ts(value: Any) -> datetime | None:
    if value in (None, "", 0):
        return None
    return datetime.fromtimestamp(int(value), tz=timezone.utc)


def ref_id(value: Any) -> str | None:
    """An id whether Stripe sent the id or the expanded object (None for anything else)."""
    if isinstance(value, dict):
        value = value.get("id")
    return value[:255] if isinstance(value, str) and value else None


def account_id_for(customer: dict[str, Any]) -> str:
    """The app account of a Stripe customer: its metadata.user_id, else its customer id."""
    user_id = ((customer.get("metadata") or {}).get("user_id") or "").strip()
    return user_id or customer["id"]


def _show(value: Any) -> str:
    if isinstance(value, list):  # a subscription's items
        return ", ".join(f"{i.get('price')} ×{i.get('quantity')}" for i in value if isinstance(i, dict)) or "none"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if value is None:
        return "—"
    return str(value)


# Stripe times are whole seconds, so several events of one object often share one. Within a
# second, state only moves forward along these ranks (a draft invoice never replaces a paid one).
_RANKS = {
    "invoice": {"draft": 0, "open": 1, "paid": 2, "uncollectible": 2, "void": 3},
    "subscription": {"incomplete": 0, "trialing": 1, "active": 2, "paused": 2, "past_due": 3, "unpaid": 4,
                     "incomplete_expired": 5, "canceled": 5},
}


def _rank(kind: str, values: dict[str, Any], row: Any = None) -> int:
    if kind == "customer":
        return int(bool(values.get("deleted") if row is None else row.deleted))
    status = values.get("status") if row is None else row.status
    return _RANKS.get(kind, {}).get(status or "", 0)


@lru_cache(maxsize=None)
def _defaults(model) -> tuple[tuple[str, Any], ...]:
    return tuple((c.name, c.default.arg) for c in model.__table__.columns
                 if c.default is not None and not callable(c.default.arg))


def _with_defaults(model, values: dict[str, Any]) -> dict[str, Any]:
    """Column defaults filled in, since a Core insert does not apply the ORM's."""
    out = dict(values)
    for name, default in _defaults(model):
        out.setdefault(name, default)
    return out


@dataclass(frozen=True)
class MirrorRow:
    """One object as an event tells it: what its mirror row holds once the event is applied."""

    model: Any  # StripeCustomer | StripeSubscription | StripeInvoice
    kind: str  # customer | subscription | invoice
    object_id: str
    values: dict[str, Any]
    version: int
    at: datetime

    def insert_values(self) -> dict[str, Any]:
        """The row inserted when the mirror does not have the object yet."""
        return _with_defaults(self.model, dict(id=self.object_id, version=self.version, updated_at=self.at,
                                               **self.values))

    def new_account(self) -> dict[str, Any] | None:
        """The account a newly mirrored customer gets (every mirrored customer has one)."""
        if self.kind != "customer" or self.values.get("deleted") or not self.values.get("account_id"):
            return None
        return account_row(self.values["account_id"], stripe_customer_id=self.object_id,
                           email=self.values.get("email"), at=self.at)


async def _upsert(session: AsyncSession, new: MirrorRow, force: bool) -> tuple[MirrorChange, Any]:
    """Insert first: most events are about an object the mirror does not have yet, and then one
    INSERT … ON CONFLICT DO NOTHING is the whole upsert. Only when the row exists is it locked
    (SELECT … FOR UPDATE on PostgreSQL: concurrent events of one object are compared and applied
    one at a time) and compared by version, so an older event never overwrites newer state."""
    result = MirrorChange(new.object_id, new.kind)
    if await insert_ignore(session, new.model, new.insert_values(), ["id"]):
        result.created = True
        return result, None
    row = await session.get(new.model, new.object_id, with_for_update=True, populate_existing=True)
    version, values = new.version, new.values
    if not force and (version < (row.version or 0) or
                      (version == row.version and _rank(new.kind, values) < _rank(new.kind, values, row))):
        result.stale = True
        return result, row
    for name, value in values.items():
        old = getattr(row, name)
        if old != value:
            result.changes.append(f"{name.replace('_', ' ')} {_show(old)} → {_show(value)}")
            setattr(row, name, value)
    row.version = max(version, row.version or 0) if not force else version
    row.updated_at = new.at
    return result, row


class NotNew(Exception):
    """`create_all` found one of its objects, or one of their accounts, in the database already."""


async def create_all(session: AsyncSession, rows: list[MirrorRow]) -> list[MirrorChange]:
    """Several objects the mirror does not have yet, inserted together: one INSERT per table and
    one for the new customers' accounts, where `upsert_*` take one or two statements each.

    The rows and outcomes ("added to the mirror") are exactly those of the `upsert_*` one by one
    when every object is new and every account free. Otherwise it raises NotNew, having written:
    the caller rolls its transaction back and applies the events one by one."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        values = row.insert_values()
        groups.setdefault((row.model, tuple(sorted(values))), []).append(values)
    for (model, _), values in groups.items():
        if len(await insert_new(session, model, values, ["id"])) < len(values):
            raise NotNew(f"a {model.__tablename__} row exists already")
    accounts = [account for account in (row.new_account() for row in rows) if account]
    if accounts and len(await insert_new(session, Account, accounts, None)) < len(accounts):
        raise NotNew("an account (or its customer's link) exists already")
    return [MirrorChange(row.object_id, row.kind, created=True) for row in rows]


def customer_row(obj: dict[str, Any], *, version: int, at: datetime, deleted: bool = False) -> MirrorRow:
    deleted = bool(deleted or obj.get("deleted"))
    if deleted and not obj.get("email"):
        values: dict[str, Any] = dict(deleted=True)  # a deleted customer's tombstone has no details
    else:
        values = dict(email=obj.get("email"), name=obj.get("name"), account_id=account_id_for(obj), deleted=deleted)
    return MirrorRow(StripeCustomer, "customer", obj["id"], values, version, at)


async def upsert_customer(session: AsyncSession, obj: dict[str, Any], *, version: int, at: datetime,
                          deleted: bool = False, force: bool = False) -> MirrorChange:
    new = customer_row(obj, version=version, at=at, deleted=deleted)
    result, row = await _upsert(session, new, force)
    if result.created:
        if new.new_account() is not None:
            await link_account(session, new.values["account_id"], stripe_customer_id=obj["id"],
                               email=new.values.get("email"), at=at)
    elif not result.stale and not row.deleted:
        await link_account(session, row.account_id, stripe_customer_id=row.id, email=row.email, at=at)
    return result


def subscription_items(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item: its price, product, quantity and (since 2025-03-31.basil) its own period end."""
    out = []
    for item in ((obj.get("items") or {}).get("data") or []):
        if not isinstance(item, dict):
            continue
        price = item.get("price") or item.get("plan") or {}
        product = price.get("product") if isinstance(price, dict) else None
        out.append(dict(id=item.get("id"), price=ref_id(price), product=ref_id(product),
                        quantity=int(item.get("quantity") or 1),
                        current_period_end=int(item.get("current_period_end") or 0) or None))
    return out


def subscription_values(obj: dict[str, Any]) -> dict[str, Any]:
    items = subscription_items(obj)
    prices = [i["price"] for i in items if i["price"]]
    plan = " + ".join(prices)[:255] if prices else ref_id(obj.get("plan"))
    # The next renewal: the subscription's own period end (before basil), else its earliest item's.
    ends = [i["current_period_end"] for i in items if i["current_period_end"]]
    period_end = obj.get("current_period_end") or (min(ends) if ends else None)
    return dict(customer_id=ref_id(obj.get("customer")), status=obj.get("status") or "unknown", plan=plan,
                current_period_end=ts(period_end), cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
                items=items)


def subscription_row(obj: dict[str, Any], *, version: int, at: datetime) -> MirrorRow:
    return MirrorRow(StripeSubscription, "subscription", obj["id"], subscription_values(obj), version, at)


async def upsert_subscription(session: AsyncSession, obj: dict[str, Any], *, version: int, at: datetime,
                              force: bool = False) -> MirrorChange:
    result, _ = await _upsert(session, subscription_row(obj, version=version, at=at), force)
    return result


def invoice_values(obj: dict[str, Any], payment_failed: bool | None) -> dict[str, Any]:
    subscription = ref_id(obj.get("subscription"))
    if subscription is None:
        parent = obj.get("parent") or {}
        subscription = ref_id((parent.get("subscription_details") or {}).get("subscription"))
    status = obj.get("status")
    attempts = int(obj.get("attempt_count") or 0)
    if payment_failed is None:
        payment_failed = status == "open" and attempts > 0
    return dict(customer_id=ref_id(obj.get("customer")), subscription_id=subscription, status=status,
                currency=obj.get("currency"), amount_due=int(obj.get("amount_due") or 0),
                amount_paid=int(obj.get("amount_paid") or 0), amount_remaining=int(obj.get("amount_remaining") or 0),
                attempt_count=attempts, next_payment_attempt=ts(obj.get("next_payment_attempt")),
                payment_failed=bool(payment_failed), invoice_created=ts(obj.get("created")),
                due_date=ts(obj.get("due_date")), collection_method=obj.get("collection_method"))


def invoice_row(obj: dict[str, Any], *, version: int, at: datetime, payment_failed: bool | None = None) -> MirrorRow:
    return MirrorRow(StripeInvoice, "invoice", obj["id"], invoice_values(obj, payment_failed), version, at)


async def upsert_invoice(session: AsyncSession, obj: dict[str, Any], *, version: int, at: datetime,
                         payment_failed: bool | None = None, force: bool = False) -> MirrorChange:
    new = invoice_row(obj, version=version, at=at, payment_failed=payment_failed)
    result, _ = await _upsert(session, new, force)
    return result


# -- sync: Stripe's current state overwrites the mirror ------------------------------------------------


async def sync_customer(session: AsyncSession, stripe: StripeClient, customer_id: str, at: datetime) -> list[MirrorChange] | None:
    """Customer, all its subscriptions and its recent invoices; None when Stripe has no such customer.

    Everything is fetched before anything is written, so a Stripe failure halfway writes nothing."""
    customer = await stripe.retrieve("customer", customer_id)
    if customer is None:
        return None
    deleted = bool(customer.get("deleted"))
    subscriptions = [] if deleted else await stripe.list("subscription", customer=customer_id, status="all",
                                                         max_items=200)
    invoices = [] if deleted else await stripe.page("invoice", customer=customer_id, limit=20)
    version = int(at.timestamp())
    changes = [await upsert_customer(session, customer, version=version, at=at, deleted=deleted, force=True)]
    for sub in subscriptions:
        changes.append(await upsert_subscription(session, sub, version=version, at=at, force=True))
    for inv in invoices:
        changes.append(await upsert_invoice(session, inv, version=version, at=at, force=True))
    # Subscriptions the mirror has that Stripe no longer lists for this customer.
    seen = {s["id"] for s in subscriptions}
    local = (await session.execute(
        select(StripeSubscription).where(StripeSubscription.customer_id == customer_id))).scalars()
    for row in local:
        if row.id not in seen:
            changes.append(MirrorChange(row.id, "subscription",
                                        changes=["unknown to Stripe for this customer (left as it was)"]))
    return changes


async def sync_subscription(session: AsyncSession, stripe: StripeClient, subscription_id: str,
                            at: datetime) -> list[MirrorChange] | None:
    sub = await stripe.retrieve("subscription", subscription_id)
    if sub is None:
        return None
    customer_id = ref_id(sub.get("customer"))
    customer = await stripe.retrieve("customer", customer_id) if customer_id else None
    version = int(at.timestamp())
    changes = []
    if customer is not None:
        changes.append(await upsert_customer(session, customer, version=version, at=at,
                                             deleted=bool(customer.get("deleted")), force=True))
    changes.append(await upsert_subscription(session, sub, version=version, at=at, force=True))
    return changes
