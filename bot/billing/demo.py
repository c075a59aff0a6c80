"""Sample billing data for `revops console --demo`: stored locally only, no Stripe account needed."""

from __future__ import annotations

from datetime import timedelta

from . import ledger
from .mirror import upsert_customer, upsert_invoice, upsert_subscription
from .events import store_and_apply
from .policy import EventPolicy


async def seed_billing(services) -> None:
    now = services.clock.now()
    version = int(now.timestamp()) - 3600
    async with services.db.transaction() as session:
        ada = {"id": "cus_DEMOada0001", "email": "ada@example.com", "name": "Ada Lovelace",
               "metadata": {"user_id": "acct_ada"}}
        await upsert_customer(session, ada, version=version, at=now)
        await upsert_subscription(session, {
            "id": "sub_DEMOada0001", "customer": ada["id"], "status": "active", "cancel_at_period_end": False,
            "current_period_end": version + 20 * 86400, "items": {"data": [{"price": {"id": "price_pro_monthly"}}]},
        }, version=version, at=now)
        await upsert_invoice(session, {
            "id": "in_DEMOada0002", "customer": ada["id"], "subscription": "sub_DEMOada0001", "status": "open",
            "currency": "usd", "amount_due": 4900, "amount_paid": 0, "amount_remaining": 4900, "attempt_count": 2,
            "next_payment_attempt": version + 86400, "created": version - 86400,
        }, version=version, at=now, payment_failed=True)
        await ledger.append_entry(session, account_id="acct_ada", delta=200, kind="purchase",
                                  reason="credit pack bought (checkout cs_DEMO1)", actor="stripe",
                                  idempotency_key="demo:ada:1", at=now - timedelta(days=3))
        await ledger.append_entry(session, account_id="acct_ada", delta=50, kind="grant",
                                  reason="goodwill after the checkout outage", actor="U0APPROVER",
                                  idempotency_key="demo:ada:2", at=now - timedelta(days=1))
        await ledger.append_entry(session, account_id="acct_ada", delta=-30, kind="claim",
                                  reason="credits spent in the app", actor="app", idempotency_key="demo:ada:3",
                                  at=now - timedelta(hours=5))
        await ledger.ensure_account(session, "acct_grace", email="grace@example.com", at=now)
        await ledger.append_entry(session, account_id="acct_grace", delta=40, kind="grant",
                                  reason="trial credits", actor="U0APPROVER", idempotency_key="demo:grace:1",
                                  at=now - timedelta(days=2))
        # Two billing events as the webhook would have stored them: one applied, one that failed.
        await store_and_apply(session, [{
            "id": "evt_DEMOpaymentfailed", "type": "invoice.payment_failed", "created": version, "livemode": False,
            "data": {"object": {"id": "in_DEMOada0002", "customer": ada["id"], "status": "open", "attempt_count": 2,
                                "amount_due": 4900, "amount_remaining": 4900, "currency": "usd",
                                "created": version - 86400, "due_date": version - 86400 * 9,
                                "collection_method": "send_invoice"}},
        }], source="webhook", now=now)
        await store_and_apply(session, [{
            "id": "evt_DEMOcheckoutbad", "type": "checkout.session.completed", "created": version, "livemode": False,
            "data": {"object": {"id": "cs_DEMObad", "customer": ada["id"], "payment_status": "paid", "mode": "payment",
                                "metadata": {"credits": "ten"}}},
        }], source="webhook", now=now)

        # A paid credit pack whose provider fee breaks the example's `provider fee` invariant
        # (finance lineage): stored, counted and posted to the incident channel.
        await store_and_apply(session, [{
            "id": "evt_DEMOfeewrong", "type": "checkout.session.completed", "created": version + 60,
            "livemode": False,
            "data": {"object": {"id": "cs_DEMOfee", "customer": ada["id"], "client_reference_id": "acct_ada",
                                "payment_status": "paid", "mode": "payment", "payment_intent": "pi_DEMOfee",
                                "metadata": {"credits": "20", "provider_fee_pct": "5", "ai_markup_factor": "4.0"}}},
        }], source="webhook", now=now, policy=EventPolicy.from_settings(services.settings))


BILLING_TOUR: list[tuple[str, str]] = [
    ("U0VIEWER", "/revops credits acct_ada"),
    ("U0VIEWER", "/revops customer ada@example.com"),  # no Stripe key in the demo: the mirror alone
    ("U0VIEWER", "/revops events --status failed"),
    ("U0VIEWER", "/revops lineage"),  # the provider fee invariant violated by evt_DEMOfeewrong
    ("U0VIEWER", "/revops trace evt_DEMOfeewrong"),
    ("U0VIEWER", "/revops receivables"),  # the priority collection list, from the mirror
    ("U0VIEWER", "/revops invoice in_DEMOada0002"),  # the mirror's side (Stripe's needs a key)
    ("U0RESPONDER", "/revops invoice retry in_DEMOada0002"),  # a retry asks Stripe: answered in words without a key
    ("U0APPROVER", "/revops export customers"),  # a CSV: written to a file here, uploaded in Slack
]
