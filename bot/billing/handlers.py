"""One handler per Stripe event type. Each applies the event's object to the mirror or the
ledger and says what it did; an unknown type is "ignored". Handlers are order-safe (the
mirror's version check) and idempotent (applying an event twice changes nothing the second
time; a credit-pack purchase is keyed by its checkout session id)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from . import ledger
from .mirror import (MirrorChange, MirrorRow, customer_row, invoice_row, ref_id, subscription_row,
                     upsert_customer, upsert_invoice, upsert_subscription)
from .models import Account, LedgerEntry, StripeCustomer, StripeInvoice


@dataclass
class Applied:
    status: str  # processed | ignored
    detail: str
    changed: bool = False


Handler = Callable[[AsyncSession, dict[str, Any], int, datetime], Awaitable[Applied]]
HANDLERS: dict[str, Handler] = {}


def handles(*types: str):
    def decorate(fn: Handler) -> Handler:
        for t in types:
            HANDLERS[t] = fn
        return fn
    return decorate


def _from_change(change: MirrorChange) -> Applied:
    if change.stale:
        return Applied("ignored", change.sentence())
    return Applied("processed", change.sentence(), change.changed)


@handles("customer.created", "customer.updated")
async def customer_changed(session, obj, version, at):
    return _from_change(await upsert_customer(session, obj, version=version, at=at))


@handles("customer.deleted")
async def customer_deleted(session, obj, version, at):
    return _from_change(await upsert_customer(session, obj, version=version, at=at, deleted=True))


@handles("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
async def subscription_changed(session, obj, version, at):
    return _from_change(await upsert_subscription(session, obj, version=version, at=at))


def _paid(obj: dict[str, Any]) -> bool | None:
    """False when the invoice is paid (its payment did not fail); None: judge by its status."""
    return False if obj.get("status") == "paid" or obj.get("paid") else None


@handles("invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded")
async def invoice_changed(session, obj, version, at):
    return _from_change(await upsert_invoice(session, obj, version=version, at=at, payment_failed=_paid(obj)))


@handles("invoice.payment_failed")
async def invoice_payment_failed(session, obj, version, at):
    return _from_change(await upsert_invoice(session, obj, version=version, at=at, payment_failed=True))


@handles("checkout.session.completed")
async def checkout_completed(session, obj, version, at):
    """A credit-pack purchase: `metadata.credits` credits to the buyer's account, once per session."""
    metadata = obj.get("metadata") or {}
    raw = str(metadata.get("credits") or "").strip()
    if not raw:
        return Applied("ignored", f"checkout {obj.get('id')}: not a credit-pack purchase (no metadata.credits)")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15 or int(raw) <= 0:
        raise ValueError(f"checkout {obj.get('id')}: metadata.credits must be a positive whole number, got {raw[:20]!r}")
    if obj.get("payment_status") not in (None, "paid", "no_payment_required"):
        return Applied("ignored", f"checkout {obj.get('id')}: payment status is {obj.get('payment_status')}; "
                                  "credits are added when it is paid")
    credits = int(raw)
    account = await _buyer_account(session, obj, at)
    if account is None:
        raise LookupError(f"checkout {obj.get('id')}: no account to credit (no client_reference_id, "
                          "metadata.user_id or customer)")
    key = f"checkout:{obj['id']}"
    before = (await session.execute(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key))).scalar()
    if before is not None:
        return Applied("processed", f"checkout {obj['id']}: {credits} credits already added to {account.id}")
    entry = await ledger.append_entry(
        session, account_id=account.id, delta=credits, kind="purchase",
        reason=f"credit pack bought (checkout {obj['id']})", actor="stripe", idempotency_key=key, at=at,
        ref=ref_id(obj.get("payment_intent")) or obj["id"],
    )
    return Applied("processed", f"checkout {obj['id']}: +{credits} credits to {account.id} "
                                f"(balance {entry.balance_after})", True)


async def _buyer_account(session: AsyncSession, obj: dict[str, Any], at: datetime) -> Account | None:
    metadata = obj.get("metadata") or {}
    customer_id = ref_id(obj.get("customer"))
    wanted = obj.get("client_reference_id") or metadata.get("user_id")
    if wanted:
        account = await session.get(Account, wanted)
        if account is not None:
            return account
    if customer_id:
        account = await ledger.resolve_account(session, customer_id)
        if account is not None:
            return account
        customer = await session.get(StripeCustomer, customer_id)
        account_id = wanted or (customer.account_id if customer else None) or customer_id
        email = (obj.get("customer_details") or {}).get("email") or (customer.email if customer else None)
        return await ledger.ensure_account(session, account_id, stripe_customer_id=customer_id, email=email, at=at)
    if wanted:
        email = (obj.get("customer_details") or {}).get("email")
        return await ledger.ensure_account(session, wanted, email=email, at=at)
    return None


@handles("charge.refunded")
async def charge_refunded(session, obj, version, at):
    """Mirror the refund on its invoice; a refunded credit pack is flagged, never clawed back silently."""
    refunded = int(obj.get("amount_refunded") or 0)
    notes = [f"charge {obj.get('id')}: {refunded} {obj.get('currency') or ''} refunded".replace("  ", " ")]
    changed = False
    invoice_id = ref_id(obj.get("invoice"))
    if invoice_id:
        invoice = await session.get(StripeInvoice, invoice_id)
        if invoice is not None and invoice.amount_refunded != refunded:
            notes.append(f"invoice {invoice_id} amount refunded {invoice.amount_refunded} → {refunded}")
            invoice.amount_refunded = refunded
            invoice.updated_at = at
            changed = True
    refs = [r for r in (ref_id(obj.get("payment_intent")), obj.get("id")) if r]
    purchase = (await session.execute(
        select(LedgerEntry).where(LedgerEntry.ref.in_(refs), LedgerEntry.kind == "purchase").limit(1)
    )).scalar_one_or_none() if refs else None
    if purchase is not None:
        notes.append(f"this refunds a credit pack of {purchase.delta} credits on {purchase.account_id}: "
                     "credits were not removed automatically (use `credits adjust` if they should be)")
    return Applied("processed", "; ".join(notes), changed)


# The `*.created` events of mirrored objects, and the row their handler above inserts when the object
# is new: the webhook's batch path inserts such rows together (mirror.create_all), the outcome being
# the handler's own ("added to the mirror").
CREATIONS: dict[str, Callable[[dict[str, Any], int, datetime], MirrorRow]] = {
    "customer.created": lambda obj, version, at: customer_row(obj, version=version, at=at),
    "customer.subscription.created": lambda obj, version, at: subscription_row(obj, version=version, at=at),
    "invoice.created": lambda obj, version, at: invoice_row(obj, version=version, at=at, payment_failed=_paid(obj)),
}


def creation(event: dict[str, Any], at: datetime) -> MirrorRow | None:
    """The mirror row a `*.created` event inserts if its object is new; None for other events."""
    plan = CREATIONS.get(event.get("type", ""))
    obj = (event.get("data") or {}).get("object")
    if plan is None or not isinstance(obj, dict) or not obj.get("id"):
        return None
    return plan(obj, int(event.get("created") or 0), at)


def created(row: MirrorRow) -> Applied:
    """What applying a `creation` says when the object was new."""
    return _from_change(MirrorChange(row.object_id, row.kind, created=True))


def customer_of(event: dict[str, Any]) -> str | None:
    obj = (event.get("data") or {}).get("object") or {}
    if obj.get("object") == "customer" or str(obj.get("id", "")).startswith("cus_"):
        return obj.get("id")
    return ref_id(obj.get("customer"))


async def apply(session: AsyncSession, event: dict[str, Any], at: datetime) -> Applied:
    """Apply one event's object; raises when it cannot be applied (the caller records `failed`)."""
    handler = HANDLERS.get(event.get("type", ""))
    if handler is None:
        return Applied("ignored", f"{event.get('type')} is not a type the bot handles")
    obj = (event.get("data") or {}).get("object")
    if not isinstance(obj, dict) or not obj.get("id"):
        raise ValueError("the event has no data.object with an id")
    return await handler(session, obj, int(event.get("created") or 0), at)
