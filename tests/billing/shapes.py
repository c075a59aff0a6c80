"""Stripe objects and events in TODAY's shapes (API 2025-03-31.basil and later), written from
Stripe's API reference — not localstripe's 2017 shapes:

- an invoice names its subscription under `parent.subscription_details.subscription`, and has no
  `charge`, `payment_intent` or `paid` (2025-03-31.basil);
- a charge has no `invoice`: an `invoice_payment` object (`inpay_…`) ties an invoice to its
  PaymentIntent (`payment.type = payment_intent`) or its charge;
- a subscription's period lives on each item (`items.data[].current_period_end`);
- a thin event is `{"object": "v2.core.event", "created": ISO 8601, "related_object": {id, type, url}}`.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

import stripe

from tests.support.localstripe import make_event

PINNED = stripe.api_version
NOW = int(time.time())


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:14]}"


def customer(cid: str, email: str, name: str = "Ada Lovelace", user_id: str | None = None) -> dict[str, Any]:
    return {"id": cid, "object": "customer", "email": email, "name": name, "created": NOW - 3600,
            "livemode": False, "metadata": {"user_id": user_id} if user_id else {}, "delinquent": False,
            "invoice_settings": {"default_payment_method": None}}


def price(price_id: str, product: str | dict, unit_amount: int = 2000, lookup_key: str | None = None,
          recurring: bool = True, metadata: dict | None = None) -> dict[str, Any]:
    return {"id": price_id, "object": "price", "active": True, "currency": "usd", "product": product,
            "lookup_key": lookup_key, "unit_amount": unit_amount, "type": "recurring" if recurring else "one_time",
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"} if recurring else None,
            "metadata": metadata or {}, "livemode": False}


def subscription(sid: str, cid: str, status: str = "active", items: list[tuple[str, int, int]] | None = None,
                 cancel_at_period_end: bool = False, trial_end: int | None = None) -> dict[str, Any]:
    """`items`: (price id, quantity, current_period_end) each."""
    items = items or [("price_pro_monthly", 1, NOW + 30 * 86400)]
    return {"id": sid, "object": "subscription", "customer": cid, "status": status, "created": NOW - 3600,
            "cancel_at_period_end": cancel_at_period_end, "cancel_at": None, "canceled_at": None,
            "collection_method": "charge_automatically", "currency": "usd", "latest_invoice": None,
            "livemode": False, "metadata": {}, "pause_collection": None, "trial_end": trial_end,
            "billing_cycle_anchor": NOW - 3600,
            "items": {"object": "list", "has_more": False, "url": f"/v1/subscription_items?subscription={sid}",
                      "data": [{"id": f"si_{sid[4:]}{n}", "object": "subscription_item", "subscription": sid,
                                "quantity": quantity, "current_period_start": end - 30 * 86400,
                                "current_period_end": end, "created": NOW - 3600, "metadata": {},
                                "price": price(price_id, f"prod_{price_id[6:]}")}
                               for n, (price_id, quantity, end) in enumerate(items)]}}


def invoice(iid: str, cid: str, sid: str | None, status: str = "open", amount: int = 4900, paid: int = 0,
            attempts: int = 0, next_attempt: int | None = None) -> dict[str, Any]:
    parent = {"type": "subscription_details", "quote_details": None,
              "subscription_details": {"subscription": sid, "metadata": {}}} if sid else None
    return {"id": iid, "object": "invoice", "customer": cid, "status": status, "currency": "usd",
            "amount_due": amount, "amount_paid": paid, "amount_remaining": amount - paid,
            "attempt_count": attempts, "attempted": attempts > 0, "next_payment_attempt": next_attempt,
            "created": NOW - 7200, "billing_reason": "subscription_cycle", "collection_method": "charge_automatically",
            "livemode": False, "parent": parent, "last_finalization_error": None,
            "status_transitions": {"finalized_at": NOW - 7000, "paid_at": NOW - 6000 if status == "paid" else None,
                                   "voided_at": None, "marked_uncollectible_at": None},
            "lines": {"object": "list", "data": [], "has_more": False, "url": f"/v1/invoices/{iid}/lines"}}


def invoice_payment(ipid: str, iid: str, pi: str, amount: int) -> dict[str, Any]:
    return {"id": ipid, "object": "invoice_payment", "amount_paid": amount, "amount_requested": amount,
            "created": NOW - 6000, "currency": "usd", "invoice": iid, "is_default": True, "livemode": False,
            "payment": {"type": "payment_intent", "payment_intent": pi}, "status": "paid",
            "status_transitions": {"canceled_at": None, "paid_at": NOW - 6000}}


def payment_intent(pi: str, cid: str | None, amount: int, status: str = "succeeded", charge: str | None = None,
                   error: str | None = None) -> dict[str, Any]:
    return {"id": pi, "object": "payment_intent", "amount": amount, "amount_received": amount if status == "succeeded"
            else 0, "currency": "usd", "customer": cid, "status": status, "latest_charge": charge,
            "livemode": False, "metadata": {}, "payment_method_types": ["card"],
            "last_payment_error": {"code": "card_declined", "message": error, "type": "card_error"} if error else None}


def charge(ch: str, cid: str | None, pi: str | None, amount: int, refunded: int = 0, status: str = "succeeded",
           failure: str | None = None) -> dict[str, Any]:
    return {"id": ch, "object": "charge", "amount": amount, "amount_captured": amount if status == "succeeded" else 0,
            "amount_refunded": refunded, "currency": "usd", "customer": cid, "payment_intent": pi,
            "paid": status == "succeeded", "captured": status == "succeeded", "refunded": refunded >= amount,
            "status": status, "failure_code": "card_declined" if failure else None, "failure_message": failure,
            "disputed": False, "livemode": False, "metadata": {}}


def refund(re: str, ch: str, pi: str | None, amount: int, status: str = "succeeded") -> dict[str, Any]:
    return {"id": re, "object": "refund", "amount": amount, "charge": ch, "currency": "usd", "payment_intent": pi,
            "reason": "requested_by_customer", "status": status, "created": NOW - 500, "metadata": {}}


def dispute(dp: str, ch: str, pi: str | None, amount: int, status: str = "needs_response",
            reason: str = "fraudulent") -> dict[str, Any]:
    return {"id": dp, "object": "dispute", "amount": amount, "charge": ch, "currency": "usd", "payment_intent": pi,
            "reason": reason, "status": status, "is_charge_refundable": False, "created": NOW - 400,
            "evidence_details": {"due_by": NOW + 7 * 86400, "has_evidence": False, "past_due": False,
                                 "submission_count": 0}, "livemode": False, "metadata": {}}


def checkout_session(cs: str, *, mode: str = "payment", payment_status: str = "paid", customer: str | None = None,
                     email: str | None = "buyer@example.com", client_reference_id: str | None = None,
                     metadata: dict | None = None, pi: str | None = None) -> dict[str, Any]:
    return {"id": cs, "object": "checkout.session", "mode": mode, "payment_status": payment_status,
            "status": "complete", "customer": customer, "client_reference_id": client_reference_id,
            "customer_creation": "if_required", "customer_details": {"email": email, "name": "Buyer"} if email else None,
            "payment_intent": pi or f"pi_{cs[3:]}", "amount_total": 1000, "currency": "usd", "livemode": False,
            "metadata": metadata or {}, "created": NOW - 60, "expires_at": NOW + 86400,
            "subscription": None, "invoice": None}


def line_item(li: str, price_obj: dict[str, Any], quantity: int = 1) -> dict[str, Any]:
    return {"id": li, "object": "item", "amount_subtotal": price_obj["unit_amount"] * quantity,
            "amount_total": price_obj["unit_amount"] * quantity, "currency": "usd", "description": "Credits",
            "quantity": quantity, "price": price_obj}


def product(prod: str, metadata: dict | None = None) -> dict[str, Any]:
    return {"id": prod, "object": "product", "name": "Credit pack", "active": True, "metadata": metadata or {},
            "livemode": False}


def event(event_type: str, obj: dict[str, Any], created: int | None = None, **fields) -> dict[str, Any]:
    return make_event(event_type, obj, created=NOW if created is None else created, **fields)


def thin_event(event_type: str, related: tuple[str, str, str] | None, *, livemode: bool = False,
               context: str | None = None, created: datetime | None = None) -> dict[str, Any]:
    """`related`: (type, id, url)."""
    at = created or datetime.now(timezone.utc)
    return {"id": uid("evt_test"), "object": "v2.core.event", "type": event_type,
            "created": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "livemode": livemode, "context": context, "reason": None,
            "related_object": {"type": related[0], "id": related[1], "url": related[2]} if related else None}
