"""Billing: the Stripe gateway, webhook ingest, the billing mirror, and the credit ledger.

    stripe_client.py  StripeClient: async calls, explicit retries, a time budget, failures as sentences
    webhooks.py       verify `Stripe-Signature`, store each event once, apply it in the same transaction
    handlers.py       one handler per event type; order-safe (an older event never overwrites newer state)
    mirror.py         customers, subscriptions, invoices as Stripe last told us; sync from Stripe with a diff
    ledger.py         accounts and the append-only credit ledger (the API the grants issue builds on)
    reconcile.py      Stripe against the mirror: active subscriptions, missed events, per-day counts, freshness
"""
