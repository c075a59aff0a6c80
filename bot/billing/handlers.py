"""One handler per Stripe event type. Each applies the event's object to the mirror or the
ledger and says what it did; an unknown type is "ignored". Handlers are order-safe (the
mirror's version check) and idempotent (applying an event twice changes nothing the second
time; a credit-pack purchase is keyed by its checkout session id).

Before a handler, `apply` reads the event as the pinned API version has it: a thin event
(`v2.core.event`) and an event of a version the readers do not understand get the object
fetch.py fetched at the pin (a fetch that failed makes the event fail, for `replay`).
Credits (credits.py) are added at payment: a Checkout Session `paid` at completion, or its
`async_payment_succeeded`, whichever comes first — once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from . import ledger, payments
from .credits import pack_credits
from .fetch import CREDIT_EVENTS, snapshot, thin_target
from .intake import annotations, created_time
from .mirror import (MirrorChange, MirrorRow, customer_row, invoice_row, ref_id, subscription_row,
                     upsert_customer, upsert_invoice, upsert_subscription)
from .models import Account, LedgerEntry, StripeCustomer
from .policy import ACCEPT_ALL, OLDEST_UNDERSTOOD, EventPolicy, is_thin


@dataclass
class Applied:
    status: str  # processed | ignored | failed
    detail: str
    changed: bool = False
    error: str | None = None  # for `failed`: why


@dataclass(frozen=True)
class Seen:
    """The event a handler's object came in, and the policy it is applied under."""

    event: dict[str, Any]
    policy: EventPolicy


Handler = Callable[..., Awaitable[Applied]]  # (session, obj, version, at[, seen])
HANDLERS: dict[str, Handler] = {}
WANTS_EVENT: set[Handler] = set()  # handlers that also take the Seen


def handles(*types: str, with_event: bool = False):
    def decorate(fn: Handler) -> Handler:
        for t in types:
            HANDLERS[t] = fn
        if with_event:
            WANTS_EVENT.add(fn)
        return fn
    return decorate


def _from_change(change: MirrorChange, *notes: str) -> Applied:
    if change.stale:
        return Applied("ignored", change.sentence())
    return Applied("processed", "; ".join([change.sentence(), *notes]), change.changed)


@handles("customer.created", "customer.updated")
async def customer_changed(session, obj, version, at):
    return _from_change(await upsert_customer(session, obj, version=version, at=at))


@handles("customer.deleted")
async def customer_deleted(session, obj, version, at):
    return _from_change(await upsert_customer(session, obj, version=version, at=at, deleted=True))


@handles("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
         "customer.subscription.paused", "customer.subscription.resumed",
         "customer.subscription.pending_update_applied")
async def subscription_changed(session, obj, version, at):
    return _from_change(await upsert_subscription(session, obj, version=version, at=at))


@handles("customer.subscription.trial_will_end")
async def subscription_trial_will_end(session, obj, version, at):
    change = await upsert_subscription(session, obj, version=version, at=at)
    trial_end = obj.get("trial_end")
    when = f"{datetime.fromtimestamp(int(trial_end)):%Y-%m-%d %H:%M}" if isinstance(trial_end, int) else "soon"
    return _from_change(change, f"its trial ends {when}")


def _paid(obj: dict[str, Any]) -> bool | None:
    """False when the invoice is paid (its payment did not fail); None: judge by its status."""
    return False if obj.get("status") == "paid" or obj.get("paid") else None


async def _invoice(session, obj, version, at, payment_failed: bool | None, *notes: str) -> Applied:
    change = await upsert_invoice(session, obj, version=version, at=at, payment_failed=payment_failed)
    if change.stale:
        return _from_change(change)
    refunds = await payments.refresh_invoice(session, obj["id"], at)  # refunds that arrived before it
    if change.created:  # said as a batch's creation says it ("added to the mirror")
        return _from_change(change, *notes)
    return _from_change(change, *notes, *refunds)


@handles("invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded",
         "invoice.voided", "invoice.marked_uncollectible", "invoice.updated")
async def invoice_changed(session, obj, version, at):
    # void and uncollectible invoices are judged by their status: not open, so no failed payment.
    return await _invoice(session, obj, version, at, _paid(obj))


@handles("invoice.payment_failed")
async def invoice_payment_failed(session, obj, version, at):
    return await _invoice(session, obj, version, at, True)


@handles("invoice.finalization_failed")
async def invoice_finalization_failed(session, obj, version, at):
    error = (obj.get("last_finalization_error") or {}).get("message") or "no reason given"
    return await _invoice(session, obj, version, at, None, f"finalization failed: {str(error)[:200]}")


@handles("invoice_payment.paid")
async def invoice_payment_paid(session, obj, version, at):
    notes = await payments.apply_invoice_payment(session, obj, version, at)
    notes += await payments.refresh_invoice(session, ref_id(obj.get("invoice")), at)
    return Applied("processed", "; ".join(notes) or f"invoice payment {obj['id']}: unchanged", bool(notes))


@handles("payment_intent.succeeded", "payment_intent.payment_failed", "charge.succeeded", "charge.failed")
async def payment_changed(session, obj, version, at):
    notes = await payments.apply_payment(session, obj, version, at)
    notes += await payments.refresh_invoice(session, await payments.invoice_of(session, payments.payment_id_of(obj)), at)
    kind = "payment intent" if obj.get("object") == "payment_intent" else "charge"
    return Applied("processed", "; ".join(notes) or f"{kind} {obj['id']}: unchanged", bool(notes))


async def _refund_notes(session, payment_id: str | None, at) -> list[str]:
    """A refunded credit pack is flagged, never clawed back silently; the invoice's refunded amount follows."""
    notes = await payments.refresh_invoice(session, await payments.invoice_of(session, payment_id), at)
    if payment_id:
        purchase = (await session.execute(
            select(LedgerEntry).where(LedgerEntry.ref == payment_id, LedgerEntry.kind == "purchase").limit(1)
        )).scalar_one_or_none()
        if purchase is not None:
            notes.append(f"this refunds a credit pack of {purchase.delta} credits on {purchase.account_id}: "
                         "credits were not removed automatically (use /revops credits adjust if they should be)")
    return notes


@handles("charge.refunded")
async def charge_refunded(session, obj, version, at):
    refunded = int(obj.get("amount_refunded") or 0)
    notes = [f"charge {obj.get('id')}: {refunded} {obj.get('currency') or ''} refunded".replace("  ", " ")]
    changes = await payments.apply_payment(session, obj, version, at)
    more = await _refund_notes(session, payments.payment_id_of(obj), at)
    return Applied("processed", "; ".join(notes + changes + more), bool(changes or more))


@handles("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")
async def refund_changed(session, obj, version, at):
    notes = await payments.apply_refund(session, obj, version, at)
    notes += await _refund_notes(session, payments.payment_id_of(obj), at)
    return Applied("processed", "; ".join(notes), True)


@handles("charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed",
         "charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated")
async def dispute_changed(session, obj, version, at):
    return Applied("processed", "; ".join(await payments.apply_dispute(session, obj, version, at)), True)


# -- Checkout: credit packs ---------------------------------------------------------------------------


def _line_items(seen: Seen, obj: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The session's line items: in the payload, or fetched before the transaction; None if neither."""
    inline = (obj.get("line_items") or {}).get("data")
    if inline:
        return inline
    notes = annotations(seen.event)
    fetched = (notes.get("fetched") or {}).get("line_items")
    if fetched is not None:
        return fetched
    if notes.get("fetch_error"):
        raise LookupError(f"checkout {obj.get('id')}: its line items could not be fetched to count its credits "
                          f"({notes['fetch_error']}); replay it once Stripe answers")
    return None


@handles(*CREDIT_EVENTS, with_event=True)
async def checkout_paid(session, obj, version, at, seen: Seen):
    """A credit pack bought: its credits to the buyer's account, once per session, at payment."""
    key = f"checkout:{obj['id']}"
    paid = seen.event.get("type") == "checkout.session.async_payment_succeeded" or obj.get("payment_status") in (
        None, "paid", "no_payment_required")
    if not paid:
        before = (await session.execute(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key))).scalar()
        if before is not None:
            return Applied("processed", f"checkout {obj['id']}: credits already added at its payment")
        return Applied("processed", f"checkout {obj['id']}: payment {obj.get('payment_status')}; its credits, if it "
                                    "is a credit pack, are added at checkout.session.async_payment_succeeded")
    items = _line_items(seen, obj) if obj.get("mode") == "payment" else None
    credits, why = pack_credits(obj, items, seen.policy.packs)
    if credits is None:
        return Applied("ignored", f"checkout {obj.get('id')}: {why}")
    before = (await session.execute(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))).scalar()
    if before is not None:
        return Applied("processed", f"checkout {obj['id']}: {before.delta} credits already added to {before.account_id}")
    account = await _buyer_account(session, obj, at)
    entry = await ledger.append_entry(
        session, account_id=account.id, delta=credits, kind="purchase",
        reason=f"credit pack bought (checkout {obj['id']}{why})", actor="stripe", idempotency_key=key, at=at,
        ref=ref_id(obj.get("payment_intent")) or obj["id"],
    )
    return Applied("processed", f"checkout {obj['id']}: +{credits} credits to {account.id} "
                                f"(balance {entry.balance_after})", True)


@handles("checkout.session.async_payment_failed")
async def checkout_payment_failed(session, obj, version, at):
    return Applied("processed", f"checkout {obj.get('id')}: the delayed payment failed; no credits added")


@handles("checkout.session.expired")
async def checkout_expired(session, obj, version, at):
    return Applied("processed", f"checkout {obj.get('id')}: expired unpaid; nothing bought")


async def _buyer_account(session: AsyncSession, obj: dict[str, Any], at: datetime) -> Account:
    """Who bought: client_reference_id or metadata.user_id, the customer's account, or (a guest
    checkout, no customer) the account with the buyer's email. Raises LookupError when none."""
    metadata = obj.get("metadata") or {}
    customer_id = ref_id(obj.get("customer"))
    wanted = obj.get("client_reference_id") or metadata.get("user_id")
    wanted = str(wanted)[:255] if wanted else None
    email = (obj.get("customer_details") or {}).get("email")
    email = str(email)[:320] if email else None
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
        email = email or (customer.email if customer else None)
        return await ledger.ensure_account(session, account_id, stripe_customer_id=customer_id, email=email, at=at)
    if wanted:
        return await ledger.ensure_account(session, wanted, email=email, at=at)
    if email and "@" in email:
        account = await ledger.resolve_account(session, email)
        if account is not None:
            return account
        raise LookupError(f"guest checkout {obj.get('id')}: no account has the buyer's email {email}; "
                          "link the account (or create it), then /revops replay this event")
    raise LookupError(f"checkout {obj.get('id')}: no account to credit (no client_reference_id, metadata.user_id, "
                      "customer or buyer email)")



# The `*.created` events of mirrored objects, and the row their handler above inserts when the object
# is new: the webhook's batch path inserts such rows together (mirror.create_all), the outcome being
# the handler's own ("added to the mirror").
CREATIONS: dict[str, Callable[[dict[str, Any], int, datetime], MirrorRow]] = {
    "customer.created": lambda obj, version, at: customer_row(obj, version=version, at=at),
    "customer.subscription.created": lambda obj, version, at: subscription_row(obj, version=version, at=at),
    "invoice.created": lambda obj, version, at: invoice_row(obj, version=version, at=at, payment_failed=_paid(obj)),
}


def creation(event: dict[str, Any], at: datetime, policy: EventPolicy = ACCEPT_ALL) -> MirrorRow | None:
    """The mirror row a `*.created` event inserts if its object is new; None for other events (and
    for one that is not applied as it is: a problem, refused by the policy, or to be re-fetched)."""
    plan = CREATIONS.get(event.get("type", ""))
    if plan is None or annotations(event) or not policy.understood(event) or policy.refusal(event):
        return None
    obj = (event.get("data") or {}).get("object")
    if plan is None or not isinstance(obj, dict) or not obj.get("id"):
        return None
    return plan(obj, int(event.get("created") or 0), at)


def created(row: MirrorRow) -> Applied:
    """What applying a `creation` says when the object was new."""
    return _from_change(MirrorChange(row.object_id, row.kind, created=True))


def customer_of(event: dict[str, Any]) -> str | None:
    obj = snapshot(event)
    if obj.get("object") == "customer" or str(obj.get("id", "")).startswith("cus_"):
        return ref_id(obj.get("id"))
    return ref_id(obj.get("customer"))


def _version(event: dict[str, Any]) -> int:
    created = created_time(event.get("created"))
    return int(created.timestamp()) if created is not None else 0


async def apply(session: AsyncSession, event: dict[str, Any], at: datetime,
                policy: EventPolicy = ACCEPT_ALL) -> Applied:
    """Apply one event; raises when it cannot be applied (the caller records `failed`)."""
    notes = annotations(event)
    if notes.get("problem"):
        return Applied("failed", notes["problem"], error=notes["problem"])
    refusal = policy.refusal(event)
    if refusal:
        return Applied("ignored", refusal)
    kind = event.get("type", "")
    if is_thin(event):
        return await _apply_thin(session, event, at, policy)
    handler = HANDLERS.get(kind)
    if handler is None:
        return Applied("ignored", f"{kind} is not a type the bot handles")
    obj = snapshot(event)
    if not obj.get("id"):
        raise ValueError("the event has no data.object with an id")
    if not policy.understood(event):
        obj = _refetched(event, policy, obj)
        if obj is None:
            return Applied("ignored", f"{kind}: Stripe no longer has {snapshot(event).get('id')}; nothing to apply")
    return await _run(handler, session, obj, _version(event), at, Seen(event, policy))


async def _run(handler: Handler, session, obj, version: int, at: datetime, seen: Seen) -> Applied:
    if handler in WANTS_EVENT:
        return await handler(session, obj, version, at, seen)
    return await handler(session, obj, version, at)


def _refetched(event: dict[str, Any], policy: EventPolicy, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object as fetched at the pinned version, for an event of a version not understood."""
    notes = annotations(event)
    if "fetched" in notes and "object" in notes["fetched"]:
        return notes["fetched"]["object"]
    reason = notes.get("fetch_error") or "it was not fetched"
    raise LookupError(f"API version {event.get('api_version')} is not one the bot reads ({OLDEST_UNDERSTOOD} to "
                      f"{policy.api_version}), and {obj.get('id')} could not be re-fetched at "
                      f"{policy.api_version} ({reason}); replay it once Stripe answers")


# A thin event about a mirrored object, applied as the snapshot event of its kind would be.
THIN_AS = {"customer": "customer.updated", "subscription": "customer.subscription.updated",
           "invoice": "invoice.updated", "invoice_payment": "invoice_payment.paid",
           "charge": "charge.succeeded", "payment_intent": "payment_intent.succeeded",
           "refund": "refund.updated", "dispute": "charge.dispute.updated",
           "checkout.session": "checkout.session.completed"}


async def _apply_thin(session, event: dict[str, Any], at: datetime, policy: EventPolicy) -> Applied:
    """A thin event: applied with its related object as fetched, or ignored with the reason."""
    kind = str(event.get("type"))
    if kind.endswith(".ping"):
        return Applied("ignored", f"{kind}: a ping from the event destination; nothing to apply")
    target = thin_target(event)
    related = event.get("related_object") if isinstance(event.get("related_object"), dict) else {}
    if target is None:
        what = f"its related object is a {related.get('type')}" if related.get("type") else "it has no related object"
        return Applied("ignored", f"thin event {kind}: {what}, which the mirror does not keep")
    notes = annotations(event)
    fetched = (notes.get("fetched") or {})
    if "object" not in fetched:
        reason = notes.get("fetch_error") or "it was not fetched"
        raise LookupError(f"thin event {kind}: {target[0]} {target[1]} could not be fetched ({reason}); "
                          "replay it once Stripe answers")
    obj = fetched["object"]
    if obj is None:
        return Applied("ignored", f"thin event {kind}: Stripe no longer has {target[1]}; nothing to apply")
    v1_type = kind.removeprefix("v1.")
    handler = HANDLERS.get(v1_type) or HANDLERS[THIN_AS[target[0]]]
    applied = await _run(handler, session, obj, _version(event), at, Seen({**event, "type": v1_type}, policy))
    applied.detail = f"{applied.detail} (thin event; {target[1]} fetched at {fetched.get('api_version')})"
    return applied
