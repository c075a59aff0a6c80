"""Payments in the mirror: what paid an invoice, and its refunds and disputes.

Today's Stripe no longer puts the invoice on a charge (`charge.invoice` went with 2025-03-31.basil):
an `invoice_payment` object ties an invoice to its PaymentIntent (or, without one, its charge), and
refunds and disputes name the PaymentIntent and the charge. So each payment has one row, keyed by
its PaymentIntent (or its charge when it has none), which every one of those events fills in part
by part, each part with the Stripe time of the state it holds: they arrive in any order, an older
event never overwrites a newer one, and an invoice's refunded amount is recomputed whenever a
payment of it changes (`refresh_invoice`).

The amount refunded of a payment is the newest fact: the charge's own `amount_refunded` when its
event is at least as new as every refund event, else the sum of the refunds not failed or canceled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .mirror import ref_id
from .models import StripeInvoice, StripePayment
from .sqlutil import insert_ignore

REFUND_COUNTS = ("pending", "succeeded", "requires_action")
OPEN_DISPUTES = ("warning_needs_response", "warning_under_review", "needs_response", "under_review")


def payment_id_of(obj: dict[str, Any]) -> str | None:
    """The payment an object belongs to: its PaymentIntent, else its charge."""
    if obj.get("object") == "payment_intent":
        return obj.get("id")
    if obj.get("object") == "charge":
        return ref_id(obj.get("payment_intent")) or obj.get("id")
    if obj.get("object") == "invoice_payment":
        payment = obj.get("payment") or {}
        return (ref_id(payment.get("payment_intent")) or ref_id(payment.get("charge"))
                or ref_id(obj.get("payment_intent")) or ref_id(obj.get("charge")))
    return ref_id(obj.get("payment_intent")) or ref_id(obj.get("charge"))


async def _row(session: AsyncSession, payment_id: str, at: datetime) -> StripePayment:
    await insert_ignore(session, StripePayment, dict(
        id=payment_id, amount=0, amount_refunded=0, refunds_version=0, version=0, updated_at=at), ["id"])
    row = await session.get(StripePayment, payment_id, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def refunded(row: StripePayment) -> int:
    refunds = row.refunds or {}
    newest_refund = max((int(r.get("version") or 0) for r in refunds.values()), default=0)
    if row.refunds_version and row.refunds_version >= newest_refund:
        return int(row.amount_refunded or 0)
    return sum(int(r.get("amount") or 0) for r in refunds.values() if r.get("status") in REFUND_COUNTS)


def open_disputes(row: StripePayment) -> list[tuple[str, dict[str, Any]]]:
    return [(dispute_id, d) for dispute_id, d in sorted((row.disputes or {}).items())
            if d.get("status") in OPEN_DISPUTES]


def _fill(row: StripePayment, **values: Any) -> None:
    """Set what is known and not yet set (ids that never change: customer, invoice, charge)."""
    for name, value in values.items():
        if value and getattr(row, name) != value and getattr(row, name) is None:
            setattr(row, name, value)


async def apply_payment(session: AsyncSession, obj: dict[str, Any], version: int, at: datetime) -> list[str]:
    """A PaymentIntent or a charge: status, amount, customer; a charge's refund figure. Notes of what changed."""
    payment_id = payment_id_of(obj)
    if not payment_id:
        return []
    row = await _row(session, payment_id, at)
    notes: list[str] = []
    is_charge = obj.get("object") == "charge"
    _fill(row, customer_id=ref_id(obj.get("customer")), currency=obj.get("currency"),
          charge_id=obj.get("id") if is_charge else ref_id(obj.get("latest_charge")),
          invoice_id=ref_id(obj.get("invoice")))  # charge.invoice / payment_intent.invoice before basil
    if version >= (row.version or 0):
        status = obj.get("status")
        error = obj.get("last_payment_error") or {}
        failure = (obj.get("failure_message") if is_charge else error.get("message")) if status in (
            "failed", "requires_payment_method") else None
        amount = int(obj.get("amount") or 0)
        if status and status != row.status:
            notes.append(f"payment {payment_id} status {row.status or '—'} → {status}")
            row.status = status
        if failure and failure != row.failure:
            notes.append(f"payment {payment_id} failed: {str(failure)[:200]}")
        row.failure = str(failure)[:1000] if failure else (None if status == "succeeded" else row.failure)
        if amount and amount != row.amount:
            row.amount = amount
        row.version = version
    if is_charge and "amount_refunded" in obj and version >= (row.refunds_version or 0):
        before = refunded(row)
        row.amount_refunded = int(obj.get("amount_refunded") or 0)
        row.refunds_version = version
        if refunded(row) != before:
            notes.append(f"payment {payment_id} refunded {before} → {refunded(row)}")
    row.updated_at = at
    return notes


async def _payment_of(session: AsyncSession, what: str, obj: dict[str, Any], at: datetime) -> StripePayment:
    """The payment a refund or a dispute belongs to (its row made if new), with what the object tells of it."""
    payment_id = payment_id_of(obj)
    if not payment_id:
        raise ValueError(f"{what} {obj.get('id')} names neither a payment intent nor a charge")
    row = await _row(session, payment_id, at)
    _fill(row, charge_id=ref_id(obj.get("charge")), currency=obj.get("currency"))
    return row


def _newer_known(entries: dict[str, Any] | None, object_id: str, version: int) -> bool:
    """Whether the mirror already holds a newer state of this refund or dispute (events come in any order)."""
    known = (entries or {}).get(object_id)
    return known is not None and int(known.get("version") or 0) > version


async def apply_refund(session: AsyncSession, obj: dict[str, Any], version: int, at: datetime) -> list[str]:
    row = await _payment_of(session, "refund", obj, at)
    payment_id = row.id
    if _newer_known(row.refunds, obj["id"], version):
        return [f"refund {obj['id']}: newer state already mirrored"]
    before = refunded(row)
    row.refunds = {**(row.refunds or {}),
                   obj["id"]: {"amount": int(obj.get("amount") or 0), "status": obj.get("status"), "version": version}}
    row.updated_at = at
    return [f"refund {obj['id']} of {int(obj.get('amount') or 0)} {obj.get('currency') or ''}: {obj.get('status')}".strip()] + (
        [f"payment {payment_id} refunded {before} → {refunded(row)}"] if refunded(row) != before else [])


async def apply_dispute(session: AsyncSession, obj: dict[str, Any], version: int, at: datetime) -> list[str]:
    row = await _payment_of(session, "dispute", obj, at)
    payment_id = row.id
    if _newer_known(row.disputes, obj["id"], version):
        return [f"dispute {obj['id']}: newer state already mirrored"]
    row.disputes = {**(row.disputes or {}),
                    obj["id"]: {"amount": int(obj.get("amount") or 0), "status": obj.get("status"),
                                "reason": str(obj.get("reason") or "")[:100], "version": version,
                                "currency": obj.get("currency")}}
    row.updated_at = at
    return [f"dispute {obj['id']} on payment {payment_id}: {obj.get('status')} ({obj.get('reason') or 'no reason'})"]


async def apply_invoice_payment(session: AsyncSession, obj: dict[str, Any], version: int,
                                at: datetime) -> list[str]:
    payment_id = payment_id_of(obj)
    invoice_id = ref_id(obj.get("invoice"))
    if not payment_id or not invoice_id:
        return [f"invoice payment {obj.get('id')}: no payment or invoice named; nothing to link"]
    row = await _row(session, payment_id, at)
    notes = []
    if row.invoice_id != invoice_id:
        notes.append(f"payment {payment_id} pays invoice {invoice_id}")
        row.invoice_id = invoice_id
    invoice = await session.get(StripeInvoice, invoice_id)
    _fill(row, customer_id=invoice.customer_id if invoice is not None else None, currency=obj.get("currency"))
    row.updated_at = at
    return notes


async def refresh_invoice(session: AsyncSession, invoice_id: str | None, at: datetime) -> list[str]:
    """The invoice's refunded amount from its payments (when the mirror has the invoice)."""
    if not invoice_id:
        return []
    invoice = await session.get(StripeInvoice, invoice_id)
    if invoice is None:
        return []
    payments = (await session.execute(select(StripePayment).where(StripePayment.invoice_id == invoice_id))).scalars()
    total = sum(refunded(p) for p in payments)
    if total == (invoice.amount_refunded or 0):
        return []
    before = invoice.amount_refunded or 0
    invoice.amount_refunded = total
    invoice.updated_at = at
    return [f"invoice {invoice_id} amount refunded {before} → {total}"]


async def invoice_of(session: AsyncSession, payment_id: str | None) -> str | None:
    if not payment_id:
        return None
    row = await session.get(StripePayment, payment_id)
    return row.invoice_id if row is not None else None


async def of_customer(session: AsyncSession, customer_id: str, invoice_ids: list[str]) -> list[StripePayment]:
    """The customer's payments: its own, and those paying its invoices."""
    query = select(StripePayment).where(StripePayment.customer_id == customer_id)
    if invoice_ids:
        query = select(StripePayment).where((StripePayment.customer_id == customer_id)
                                            | StripePayment.invoice_id.in_(invoice_ids))
    return list((await session.execute(query.order_by(StripePayment.id))).scalars())
