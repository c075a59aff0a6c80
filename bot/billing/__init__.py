"""Billing: the Stripe gateway, webhook ingest, the billing mirror, and the credit ledger.

    stripe_client.py  StripeClient: async calls, explicit retries, a time budget, failures as sentences
    webhooks.py       `POST /webhooks/stripe` without HTTP: verify `Stripe-Signature`, store, answer
    events.py         store_and_apply: each event stored once by id and applied (webhook, replays, reconcile)
    batch.py          the webhook group commit: concurrent deliveries stored in one transaction
    handlers.py       one handler per event type; order-safe (an older event never overwrites newer state)
    mirror.py         customers, subscriptions, invoices as Stripe last told us; sync from Stripe with a diff
    ledger.py         accounts and the append-only credit ledger (the API the grants issue builds on)
    reconcile.py      Stripe against the mirror: active subscriptions, missed events, per-day counts, freshness
"""
