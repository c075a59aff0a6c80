"""Invoices (issue 18 item 1): the invoice as Stripe has it next to the mirror's row, the actions
its state allows, and the four-eyes requests for the two that need a second person (mark paid
out of band, void).

Domain code: it takes the session, the Stripe gateway, who acts and when, and returns data
(`InvoiceView`, `InvoiceActionRequest`, `Decision`); `commands/invoice.py` says it.

A decision is conditional updates, never a read-then-write: pending → approving (the claim,
in a short transaction of its own, before Stripe is called: a Reject or a second Approve
racing it finds the request no longer pending), then, once Stripe has answered, approving →
approved | failed in the router's unit of work (or back to pending when Stripe could not be
reached: the same idempotency key makes the next Approve safe)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Integer, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from bot import audit
from bot.errors import NotFound, UsageError
from bot.grammar import as_id
from bot.models import Base, BigId
from bot.text import Code
from bot.text import Text as TypedText

from . import mirror
from .models import StripeCustomer, StripeInvoice, StripePayment

FOUR_EYES = ("mark_paid", "void")
ACTION_NAMES = {"pay": "retry the payment", "send": "resend the invoice", "mark_paid": "mark it paid out of band",
                "void": "void it"}
SYSTEM_ACTOR = "revops"
CONSOLE_CHANNEL = "C0CONSOLE"


class InvoiceActionRequest(Base):
    """A request to mark an invoice paid out of band or void it, decided once by a second person."""

    __tablename__ = "invoice_action_requests"
    __table_args__ = (
        CheckConstraint("action IN ('mark_paid', 'void')", name="ck_invoice_action_kind"),
        CheckConstraint("status IN ('pending', 'approving', 'approved', 'failed', 'rejected', 'cancelled', "
                        "'expired')", name="ck_invoice_action_status"),
        Index("ix_invoice_action_requests_pending", "status", "expires_at"),
        Index("ix_invoice_action_requests_invoice", "invoice_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(16))
    invoice_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    currency: Mapped[str | None] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(Text)

    @property
    def ref(self) -> str:
        return f"invoice-action:{self.id}"

    @property
    def idempotency_key(self) -> str:
        return f"revops-invoice-action-{self.id}"


@dataclass
class InvoiceView:
    """One invoice: Stripe's object (payment intent expanded), the mirror's row, the payments the
    mirror holds for it, and the live requests on it."""
    invoice_id: str
    stripe: dict[str, Any] | None
    mirror: StripeInvoice | None
    payments: list[StripePayment] = field(default_factory=list)
    customer: StripeCustomer | None = None
    requests: list[InvoiceActionRequest] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        return (self.stripe or {}).get("status") or (self.mirror.status if self.mirror else None)

    @property
    def payment_intent(self) -> dict[str, Any] | None:
        """The invoice's PaymentIntent (expanded): today through `payments.data[].payment`, the
        default payment first; before 2025-03-31.basil the invoice's own `payment_intent`."""
        stripe_obj = self.stripe or {}
        payments = [p for p in ((stripe_obj.get("payments") or {}).get("data") or []) if isinstance(p, dict)]
        payments.sort(key=lambda p: (not p.get("is_default"), -int(p.get("created") or 0)))
        for payment in payments:
            pi = (payment.get("payment") or {}).get("payment_intent")
            if isinstance(pi, dict):
                return pi
        pi = stripe_obj.get("payment_intent")
        return pi if isinstance(pi, dict) else None

    @property
    def last_error(self) -> str | None:
        error = (self.payment_intent or {}).get("last_payment_error") or {}
        message = error.get("message")
        code = error.get("decline_code") or error.get("code")
        if message:
            return f"{message} ({code})" if code else message
        failures = [p.failure for p in self.payments if p.failure]
        return failures[-1] if failures else None


def parse_invoice_id(raw: str) -> str:
    raw = (raw or "").strip()
    if not raw.startswith("in_") or len(raw) > 255 or not raw.replace("_", "").isalnum():
        raise UsageError(TypedText("an invoice is named by its Stripe id, such as ", Code("in_1Abc…"), "; got ",
                                   Code(raw[:40])))
    return raw


def parse_request_id(raw: str) -> int:
    request_id = as_id(raw)
    if request_id is None:
        raise UsageError(TypedText("a request is named by its number, such as #12; got ", Code(raw[:40])))
    return request_id


def actions_for(invoice: dict[str, Any] | None) -> list[str]:
    """What the invoice's state allows: open → retry (charged automatically or not), resend (for
    send_invoice collection), mark paid, void; uncollectible → mark paid, void; else nothing."""
    if not invoice:
        return []
    status = invoice.get("status")
    if status == "open":
        actions = ["pay"]
        if invoice.get("collection_method") == "send_invoice":
            actions.append("send")
        return actions + ["mark_paid", "void"]
    if status == "uncollectible":
        return ["mark_paid", "void"]
    return []


def refuse_unless_allowed(invoice: dict[str, Any] | None, invoice_id: str, action: str) -> dict[str, Any]:
    """The invoice, when its state allows `action`; else a UsageError saying why, in words."""
    if invoice is None:
        raise NotFound(TypedText("Stripe has no invoice ", Code(invoice_id)))
    if action not in actions_for(invoice):
        status = invoice.get("status") or "unknown"
        if action == "send" and status == "open":
            why = (f"it is collected by charging the card ({invoice.get('collection_method') or 'charge_automatically'}),"
                   " not sent")
        else:
            why = f"it is {status}"
        raise UsageError(TypedText("Cannot ", ACTION_NAMES[action], " for ", Code(invoice_id), f": {why}."))
    return invoice


async def load_view(session: AsyncSession, invoice_id: str, stripe_obj: dict[str, Any] | None,
                    now: datetime) -> InvoiceView:
    """The mirror's side of the view (Stripe's was fetched before, outside any transaction)."""
    row = await session.get(StripeInvoice, invoice_id)
    payments = list((await session.execute(
        select(StripePayment).where(StripePayment.invoice_id == invoice_id).order_by(StripePayment.updated_at)
    )).scalars().all())
    customer_id = mirror.ref_id((stripe_obj or {}).get("customer")) or (row.customer_id if row else None)
    customer = await session.get(StripeCustomer, customer_id) if customer_id else None
    requests = list((await session.execute(
        select(InvoiceActionRequest).where(InvoiceActionRequest.invoice_id == invoice_id,
                                           InvoiceActionRequest.status.in_(("pending", "approving")),
                                           InvoiceActionRequest.expires_at > now)
        .order_by(InvoiceActionRequest.id))).scalars().all())
    return InvoiceView(invoice_id, stripe_obj, row, payments, customer, requests)


async def mirror_answer(session: AsyncSession, invoice: dict[str, Any], at: datetime) -> mirror.MirrorChange:
    """Stripe's answer to an action overwrites the mirror's row (it is the newest state)."""
    return await mirror.upsert_invoice(session, invoice, version=int(at.timestamp()), at=at, force=True)


def retry_key(invoice: dict[str, Any], action: str) -> str:
    """One key per invoice, action and attempt: two people clicking Retry on the same failed
    attempt make one payment attempt; after Stripe has answered (declined), a new attempt."""
    return f"revops-{action}-{invoice['id']}-{int(invoice.get('attempt_count') or 0)}"


# -- four-eyes requests ----------------------------------------------------------------------------


@dataclass
class Decision:
    """What a click on a request came to: claimed (Stripe may now be called), approved (simulated),
    rejected, cancelled, or a refusal: own_request, not_requester, already_decided."""
    request: InvoiceActionRequest
    outcome: str
    expired_now: bool = False

    @property
    def refused(self) -> bool:
        return self.outcome in ("own_request", "not_requester", "already_decided")


async def request_action(session: AsyncSession, *, action: str, invoice: dict[str, Any], reason: str, actor: str,
                         channel: str | None, now: datetime, ttl, dry_run: bool) -> InvoiceActionRequest:
    assert action in FOUR_EYES
    reason = (reason or "").strip()
    if not reason:
        raise UsageError("a reason is required")
    req = InvoiceActionRequest(
        action=action, invoice_id=invoice["id"], customer_id=mirror.ref_id(invoice.get("customer")),
        amount=int(invoice.get("amount_remaining") or invoice.get("amount_due") or 0),
        currency=invoice.get("currency"), reason=reason, requester=actor, channel=channel or CONSOLE_CHANNEL,
        status="pending", dry_run=dry_run, created_at=now, expires_at=now + ttl)
    session.add(req)
    await session.flush()
    return req


async def load_request(session: AsyncSession, request_id: int) -> InvoiceActionRequest:
    req = await session.get(InvoiceActionRequest, request_id, populate_existing=True)
    if req is None:
        raise NotFound(f"there is no invoice action request #{request_id}")
    return req


async def _move(session: AsyncSession, request_id: int, old: str, new: str, *, now: datetime,
                values: dict[str, Any], live: bool = True) -> bool:
    query = update(InvoiceActionRequest).where(InvoiceActionRequest.id == request_id,
                                               InvoiceActionRequest.status == old)
    if live:
        query = query.where(InvoiceActionRequest.expires_at > now)
    result = await session.execute(query.values(status=new, **values).execution_options(synchronize_session=False))
    return result.rowcount == 1


async def claim(session: AsyncSession, req: InvoiceActionRequest, *, actor: str, now: datetime) -> bool:
    """pending → approving, once, by someone other than the requester, before Stripe is called."""
    return await _move(session, req.id, "pending", "approving", now=now,
                       values=dict(decided_by=actor, decided_at=now))


async def settle(session: AsyncSession, req: InvoiceActionRequest, status: str, *, now: datetime,
                 note: str | None = None) -> InvoiceActionRequest:
    """approving → approved | failed (Stripe answered), or → pending (Stripe could not be reached)."""
    values: dict[str, Any] = dict(decision_note=note)
    if status == "pending":
        values.update(decided_by=None, decided_at=None)
    await _move(session, req.id, "approving", status, now=now, values=values, live=False)
    return await load_request(session, req.id)


async def simulate_approval(session: AsyncSession, req: InvoiceActionRequest, *, actor: str,
                            now: datetime) -> Decision:
    """A rehearsal (dry run): approved on paper; Stripe is never called."""
    if not await _move(session, req.id, "pending", "approved", now=now,
                       values=dict(decided_by=actor, decided_at=now, dry_run=True,
                                   decision_note="dry run: Stripe was not called")):
        return await no_transition(session, req.id, now)
    return Decision(await load_request(session, req.id), "approved")


async def no_transition(session: AsyncSession, request_id: int, now: datetime) -> Decision:
    req = await load_request(session, request_id)
    expired_now = False
    if req.status == "pending" and req.expires_at <= now:
        expired_now = await _move(session, req.id, "pending", "expired", now=now, values={}, live=False)
        req = await load_request(session, request_id)
    return Decision(req, "already_decided", expired_now=expired_now)


async def reject(session: AsyncSession, request_id: int, *, actor: str, now: datetime,
                 note: str | None = None) -> Decision:
    if not await _move(session, request_id, "pending", "rejected", now=now,
                       values=dict(decided_by=actor, decided_at=now, decision_note=note)):
        return await no_transition(session, request_id, now)
    return Decision(await load_request(session, request_id), "rejected")


async def cancel(session: AsyncSession, request_id: int, *, actor: str, now: datetime) -> Decision:
    req = await load_request(session, request_id)
    if req.requester != actor:
        return Decision(req, "not_requester")
    if not await _move(session, request_id, "pending", "cancelled", now=now,
                       values=dict(decided_by=actor, decided_at=now)):
        return await no_transition(session, request_id, now)
    return Decision(await load_request(session, request_id), "cancelled")


async def expire_overdue(session: AsyncSession, now: datetime, limit: int = 200) -> list[InvoiceActionRequest]:
    """Expire every pending request past its time (each once) and audit it."""
    due = (await session.execute(
        select(InvoiceActionRequest).where(InvoiceActionRequest.status == "pending",
                                           InvoiceActionRequest.expires_at <= now)
        .order_by(InvoiceActionRequest.id).limit(limit))).scalars().all()
    expired = []
    for req in due:
        if not await _move(session, req.id, "pending", "expired", now=now, values={}, live=False):
            continue
        req = await load_request(session, req.id)
        expired.append(req)
        await audit.append(session, at=now, actor=SYSTEM_ACTOR, command="invoices.expire",
                           args={"request": req.id, "invoice": req.invoice_id, "action": req.action},
                           outcome="expired", channel=req.channel, surface="worker",
                           detail=f"invoice request #{req.id} expired without a decision", subject=req.invoice_id)
    return expired
