"""Every event type a billing account sends (issue item 2), each delivered in today's shape
(tests/billing/shapes.py), through the live webhook: the mirror, the ledger and `/revops customer`
end as Stripe shows them, whatever the order — on SQLite and PostgreSQL."""

import itertools

import pytest

from bot.billing.models import StripeCustomer, StripeEvent, StripeInvoice, StripePayment, StripeSubscription

from tests.support.harness import VIEWER

from . import shapes
from .shapes import NOW, event

CID = "cus_Today1"


def _post(bot, *events):
    answers = [bot.post_event(e) for e in events]
    assert [a.status_code for a in answers] == [200] * len(events)
    return [a.json()["status"] for a in answers]


def _detail(bot, e):
    [row] = bot.rows(StripeEvent, StripeEvent.id == e["id"])
    return row.detail


def _invoice(bot, iid):
    [row] = bot.rows(StripeInvoice, StripeInvoice.id == iid)
    return row


def test_customer_created_updated_deleted(webhook_bot):
    created = event("customer.created", shapes.customer(CID, "ada@example.com", user_id="acct_ada"), NOW - 30)
    updated = event("customer.updated", shapes.customer(CID, "ada@lovelace.example", user_id="acct_ada"), NOW - 20)
    deleted = event("customer.deleted", {"id": CID, "object": "customer", "deleted": True}, NOW - 10)
    assert _post(webhook_bot, created, updated, deleted) == ["processed"] * 3
    [customer] = webhook_bot.rows(StripeCustomer)
    assert customer.deleted and customer.email == "ada@lovelace.example" and customer.account_id == "acct_ada"


def test_subscription_keeps_every_item_and_follows_each_lifecycle_event(webhook_bot):
    base_end, addon_end = NOW + 30 * 86400, NOW + 10 * 86400
    two = [("price_pro_monthly", 1, base_end), ("price_seats", 3, addon_end)]
    sub = lambda status, items=two, **kw: shapes.subscription("sub_Today1", CID, status, items, **kw)  # noqa: E731
    steps = [
        ("customer.subscription.created", sub("trialing", trial_end=NOW + 3 * 86400), "trialing"),
        ("customer.subscription.trial_will_end", sub("trialing", trial_end=NOW + 3 * 86400), "trialing"),
        ("customer.subscription.updated", sub("active"), "active"),
        ("customer.subscription.paused", sub("paused"), "paused"),
        ("customer.subscription.resumed", sub("active"), "active"),
        ("customer.subscription.pending_update_applied",
         sub("active", two[:1] + [("price_seats", 5, addon_end)]), "active"),
        ("customer.subscription.deleted", sub("canceled", cancel_at_period_end=False), "canceled"),
    ]
    events = [event(kind, obj, NOW + i) for i, (kind, obj, _) in enumerate(steps)]
    statuses = []
    for e, (_, _, expected) in zip(events, steps):
        assert _post(webhook_bot, e) == ["processed"], e["type"]
        [row] = webhook_bot.rows(StripeSubscription)
        statuses.append(row.status)
        if e["type"] == "customer.subscription.created":
            # Both items, each with its price, quantity and own period end; the renewal is the earliest.
            assert row.items == [
                {"id": "si_Today10", "price": "price_pro_monthly", "product": "prod_pro_monthly", "quantity": 1,
                 "current_period_end": base_end},
                {"id": "si_Today11", "price": "price_seats", "product": "prod_seats", "quantity": 3,
                 "current_period_end": addon_end}]
            assert row.plan == "price_pro_monthly + price_seats"
            assert int(row.current_period_end.timestamp()) == addon_end
    assert statuses == [expected for _, _, expected in steps]
    assert "its trial ends" in _detail(webhook_bot, events[1])
    assert "items price_pro_monthly ×1, price_seats ×3 → price_pro_monthly ×1, price_seats ×5" in _detail(
        webhook_bot, events[5])


def test_invoice_lifecycle_voided_uncollectible_and_finalization_failed(webhook_bot):
    sub = "sub_Today1"
    paid_path = [
        event("invoice.created", shapes.invoice("in_T1", CID, sub, "draft"), NOW),
        event("invoice.finalized", shapes.invoice("in_T1", CID, sub, "open"), NOW + 1),
        event("invoice.payment_failed", shapes.invoice("in_T1", CID, sub, "open", attempts=1,
                                                       next_attempt=NOW + 86400), NOW + 2),
        event("invoice.paid", shapes.invoice("in_T1", CID, sub, "paid", paid=4900, attempts=2), NOW + 3),
        event("invoice.payment_succeeded", shapes.invoice("in_T1", CID, sub, "paid", paid=4900, attempts=2), NOW + 3),
    ]
    assert _post(webhook_bot, *paid_path) == ["processed"] * 5
    paid = _invoice(webhook_bot, "in_T1")
    assert (paid.status, paid.payment_failed, paid.amount_paid, paid.subscription_id) == ("paid", False, 4900, sub)

    failing = shapes.invoice("in_T2", CID, sub, "open", attempts=3)
    _post(webhook_bot, event("invoice.payment_failed", failing, NOW))
    assert _invoice(webhook_bot, "in_T2").payment_failed
    assert _post(webhook_bot, event("invoice.voided", {**failing, "status": "void"}, NOW + 1)) == ["processed"]
    voided = _invoice(webhook_bot, "in_T2")
    assert (voided.status, voided.payment_failed) == ("void", False)

    lost = shapes.invoice("in_T3", CID, sub, "open", attempts=4)
    _post(webhook_bot, event("invoice.payment_failed", lost, NOW))
    assert _post(webhook_bot, event("invoice.marked_uncollectible", {**lost, "status": "uncollectible"},
                                    NOW + 1)) == ["processed"]
    assert (_invoice(webhook_bot, "in_T3").status, _invoice(webhook_bot, "in_T3").payment_failed) == (
        "uncollectible", False)
    # An older open event after the void changes nothing.
    assert _post(webhook_bot, event("invoice.finalized", {**failing, "attempt_count": 0}, NOW - 5)) == ["ignored"]
    assert _invoice(webhook_bot, "in_T2").status == "void"

    broken = {**shapes.invoice("in_T4", CID, sub, "draft"),
              "last_finalization_error": {"type": "invalid_request_error", "code": "customer_tax_location_invalid",
                                          "message": "The customer's location is not recognized"}}
    e = event("invoice.finalization_failed", broken, NOW)
    assert _post(webhook_bot, e) == ["processed"]
    assert "finalization failed: The customer's location is not recognized" in _detail(webhook_bot, e)
    assert _invoice(webhook_bot, "in_T4").status == "draft"


def _payment_events(created=NOW):
    """An invoice paid by a PaymentIntent, its charge partly refunded (today: no charge.invoice)."""
    return {
        "invoice": event("invoice.paid", shapes.invoice("in_R1", CID, "sub_R", "paid", paid=4900), created),
        "link": event("invoice_payment.paid", shapes.invoice_payment("inpay_R1", "in_R1", "pi_R1", 4900), created),
        "intent": event("payment_intent.succeeded", shapes.payment_intent("pi_R1", CID, 4900, charge="ch_R1"),
                        created),
        "charge": event("charge.succeeded", shapes.charge("ch_R1", CID, "pi_R1", 4900), created),
        "refunded": event("charge.refunded", shapes.charge("ch_R1", CID, "pi_R1", 4900, refunded=1000),
                          created + 10),
    }


@pytest.mark.parametrize("order", list(itertools.permutations(["invoice", "link", "refunded"]))[::2])
def test_a_refund_reaches_its_invoice_through_the_payment_intent_whatever_the_order(webhook_bot, order):
    events = _payment_events()
    assert set(_post(webhook_bot, *[events[name] for name in order])) == {"processed"}
    assert _invoice(webhook_bot, "in_R1").amount_refunded == 1000
    [payment] = webhook_bot.rows(StripePayment)
    assert (payment.id, payment.invoice_id, payment.charge_id) == ("pi_R1", "in_R1", "ch_R1")


def test_refund_objects_partial_refunds_a_failed_refund_and_a_refunded_credit_pack(webhook_bot):
    events = _payment_events()
    _post(webhook_bot, *events.values())
    second = shapes.refund("re_R2", "ch_R1", "pi_R1", 500, status="pending")
    first = shapes.refund("re_R1", "ch_R1", "pi_R1", 1000)
    _post(webhook_bot, event("refund.created", first, NOW + 9), event("refund.created", second, NOW + 20))
    assert _invoice(webhook_bot, "in_R1").amount_refunded == 1500  # the refunds are newer than the charge's figure
    _post(webhook_bot, event("refund.updated", {**second, "status": "succeeded"}, NOW + 25))
    assert _invoice(webhook_bot, "in_R1").amount_refunded == 1500
    failed = event("refund.updated", {**second, "status": "failed"}, NOW + 30)
    _post(webhook_bot, failed)
    assert _invoice(webhook_bot, "in_R1").amount_refunded == 1000
    assert "invoice in_R1 amount refunded 1500 → 1000" in _detail(webhook_bot, failed)
    # An older refund.updated after the failure changes nothing.
    _post(webhook_bot, event("refund.updated", {**second, "status": "succeeded"}, NOW + 26))
    assert _invoice(webhook_bot, "in_R1").amount_refunded == 1000


def test_failed_payments_and_disputes_and_the_customer_view(webhook_bot):
    _post(webhook_bot, event("customer.created", shapes.customer(CID, "ada@example.com", user_id="acct_ada"), NOW - 60))
    _post(webhook_bot, event("customer.subscription.created", shapes.subscription(
        "sub_R", CID, "active", [("price_pro_monthly", 1, NOW + 30 * 86400), ("price_seats", 3, NOW + 9 * 86400)]),
        NOW - 50))
    _post(webhook_bot, *_payment_events().values())
    declined = event("payment_intent.payment_failed", shapes.payment_intent(
        "pi_F1", CID, 2000, status="requires_payment_method", error="Your card was declined."), NOW)
    charge_failed = event("charge.failed", shapes.charge("ch_F1", CID, "pi_F1", 2000, status="failed",
                                                         failure="Your card was declined."), NOW)
    assert _post(webhook_bot, declined, charge_failed) == ["processed"] * 2
    [failed] = webhook_bot.rows(StripePayment, StripePayment.id == "pi_F1")
    assert (failed.status, failed.failure, failed.charge_id) == ("failed", "Your card was declined.", "ch_F1")
    assert "payment pi_F1 failed: Your card was declined." in _detail(webhook_bot, declined)

    opened = event("charge.dispute.created", shapes.dispute("dp_R1", "ch_R1", "pi_R1", 4900), NOW + 40)
    assert _post(webhook_bot, opened) == ["processed"]
    text = webhook_bot.answer(f"customer {CID}", user=VIEWER)
    assert "Open disputes: 1" in text and "dp_R1 on pi_R1: 49.00 USD, needs_response (fraudulent)" in text
    assert "Refunds: 10.00 USD over 1 payment(s)" in text
    assert "pi_R1: 10.00 USD of 49.00 USD refunded (invoice in_R1)" in text
    assert "in_R1: paid, 49.00 USD, 0 attempt(s), 10.00 USD refunded" in text
    assert "· price_pro_monthly ×1, renews" in text and "· price_seats ×3, renews" in text
    closed = event("charge.dispute.closed", shapes.dispute("dp_R1", "ch_R1", "pi_R1", 4900, status="lost"), NOW + 50)
    assert _post(webhook_bot, closed) == ["processed"]
    stale = event("charge.dispute.created", shapes.dispute("dp_R1", "ch_R1", "pi_R1", 4900), NOW + 40,
                  event_id="evt_stale_dispute")
    _post(webhook_bot, stale)
    text = webhook_bot.answer(f"customer {CID}", user=VIEWER)
    assert "Open disputes" not in text and "newer state already mirrored" in _detail(webhook_bot, stale)


def test_unknown_types_are_stored_as_ignored(webhook_bot):
    e = event("payout.paid", {"id": "po_1", "object": "payout", "amount": 100})
    assert _post(webhook_bot, e) == ["ignored"]
    assert "not a type the bot handles" in _detail(webhook_bot, e)
