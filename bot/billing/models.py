"""Billing tables: Stripe events as received, the billing mirror, accounts and the credit ledger.

All on the shared `Base`, created by migration 0002_billing; 0008_stripe_today adds each event's
`api_version` and `account`, every item of a subscription, and the payments (refunds, disputes).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.models import Base, BigId

EVENT_STATUSES = ("processed", "failed", "ignored")
LEDGER_KINDS = ("purchase", "grant", "adjustment", "claim")


class StripeEvent(Base):
    """Every Stripe event the bot stored, once, keyed by Stripe's event id."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # evt_…
    type: Mapped[str] = mapped_column(String(100), index=True)
    created: Mapped[datetime] = mapped_column(index=True)  # Stripe's timestamp
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    object_id: Mapped[str | None] = mapped_column(String(255), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    api_version: Mapped[str | None] = mapped_column(String(64))  # the version the event was rendered in
    account: Mapped[str | None] = mapped_column(String(255))  # a connected account's acct_…, else None
    payload: Mapped[dict]
    status: Mapped[str] = mapped_column(String(16), index=True)  # processed | failed | ignored
    detail: Mapped[str | None] = mapped_column(Text)  # what applying it did, or why not
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # webhook | replay | reconcile
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[datetime] = mapped_column(index=True)
    processed_at: Mapped[datetime]


class StripeCustomer(Base):
    __tablename__ = "stripe_customers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # cus_…
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[str | None] = mapped_column(String(255), index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Stripe time (epoch seconds) of the state held here: an event older than this is not applied.
    version: Mapped[int] = mapped_column(BigId, default=0)
    updated_at: Mapped[datetime]


class StripeSubscription(Base):
    __tablename__ = "stripe_subscriptions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # sub_…
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    plan: Mapped[str | None] = mapped_column(String(255))  # price id, else plan id
    current_period_end: Mapped[datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # Every item: [{"id": si_…, "price": price_…, "product": prod_…, "quantity": n, "current_period_end": epoch}]
    items: Mapped[list | None]
    version: Mapped[int] = mapped_column(BigId, default=0)
    updated_at: Mapped[datetime]


class StripeInvoice(Base):
    __tablename__ = "stripe_invoices"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # in_…
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(8))
    amount_due: Mapped[int] = mapped_column(BigId, default=0)
    amount_paid: Mapped[int] = mapped_column(BigId, default=0)
    amount_remaining: Mapped[int] = mapped_column(BigId, default=0)
    amount_refunded: Mapped[int] = mapped_column(BigId, default=0)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_payment_attempt: Mapped[datetime | None]
    payment_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    invoice_created: Mapped[datetime | None]
    due_date: Mapped[datetime | None]  # 0013: receivables count days overdue from it
    collection_method: Mapped[str | None] = mapped_column(String(32))  # 0013: send_invoice can be resent
    version: Mapped[int] = mapped_column(BigId, default=0)
    updated_at: Mapped[datetime]


class StripePayment(Base):
    """One payment (a PaymentIntent, or a charge without one) as its events told it: the invoice it
    paid (from `invoice_payment` objects), its refunds and disputes. Each part keeps the Stripe time
    of the state it holds, so the parts arrive in any order."""

    __tablename__ = "stripe_payments"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # pi_… (or ch_… without a PaymentIntent)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    invoice_id: Mapped[str | None] = mapped_column(String(255), index=True)
    charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigId, default=0)
    amount_refunded: Mapped[int] = mapped_column(BigId, default=0)  # the charge's own figure, as of refunds_version
    refunds_version: Mapped[int] = mapped_column(BigId, default=0)
    refunds: Mapped[dict | None]  # re_… -> {"amount", "status", "version"}
    disputes: Mapped[dict | None]  # dp_… -> {"amount", "status", "reason", "version"}
    failure: Mapped[str | None] = mapped_column(Text)  # the last failed attempt's message
    version: Mapped[int] = mapped_column(BigId, default=0)
    updated_at: Mapped[datetime]


class Account(Base):
    """An app account: its own id, linked to a Stripe customer and an email; holds the credit balance."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="ck_accounts_balance_not_negative"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    balance: Mapped[int] = mapped_column(BigId, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LedgerEntry(Base):
    """Append-only (triggers refuse UPDATE and DELETE); one row per balance change."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('purchase', 'grant', 'adjustment', 'claim')", name="ck_ledger_kind"),
        CheckConstraint("balance_after >= 0", name="ck_ledger_balance_after"),
        Index("ix_ledger_account_at", "account_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(255), ForeignKey("accounts.id"))
    delta: Mapped[int] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    ref: Mapped[str | None] = mapped_column(String(255), index=True)  # e.g. the payment intent of a purchase
    balance_after: Mapped[int] = mapped_column(BigId)
    at: Mapped[datetime]


class LineageCheck(Base):
    """One `[[invariants]]` check of one applied event (bot/billing/lineage.py): passed, or
    violated with what was found. Keyed by (event, invariant): a replay checks nothing twice."""

    __tablename__ = "lineage_checks"
    __table_args__ = (Index("ix_lineage_checks_invariant_at", "invariant", "at"),)

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    invariant: Mapped[str] = mapped_column(String(100), primary_key=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text)  # what was found, for a violation
    at: Mapped[datetime]


class LineagePost(Base):
    """The hour an invariant's violation was posted to the incident channel: once per invariant and hour."""

    __tablename__ = "lineage_posts"

    invariant: Mapped[str] = mapped_column(String(100), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255))
