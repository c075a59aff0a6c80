"""POST /webhooks/stripe: signatures, malformed bodies, duplicates, order, credit packs, failures."""

import json
import time

from bot.billing.models import Account, LedgerEntry, StripeEvent, StripeSubscription

from tests.support.harness import WEBHOOK_SECRET
from tests.support.localstripe import make_event, post_event, signed_headers


def _sub(sub_id="sub_syn1", customer="cus_syn1", status="active", cancel=False):
    return {"id": sub_id, "object": "subscription", "customer": customer, "status": status,
            "cancel_at_period_end": cancel, "current_period_end": 1_800_000_000,
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_pro"}}]}}


def _session(session_id="cs_test_1", credits="100", customer="cus_buyer", user_id="acct_buyer", paid="paid"):
    return {"id": session_id, "object": "checkout.session", "customer": customer, "client_reference_id": user_id,
            "payment_status": paid, "payment_intent": f"pi_{session_id}", "mode": "payment",
            "customer_details": {"email": "buyer@example.com"}, "metadata": {"credits": credits}}


def test_bad_and_missing_signatures_store_nothing(webhook_bot):
    event = make_event("customer.subscription.created", _sub())
    body = json.dumps(event)
    r = post_event(webhook_bot.http, "whsec_wrong_secret", event)
    assert r.status_code == 400 and "bad signature" in r.json()["error"]
    r = webhook_bot.http.post("/webhooks/stripe", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    headers = signed_headers(WEBHOOK_SECRET, body)
    r = webhook_bot.http.post("/webhooks/stripe", content=body.replace("active", "canceled"), headers=headers)
    assert r.status_code == 400  # body altered after signing
    r = webhook_bot.http.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": "t=abc,v1=zz"})
    assert r.status_code == 400
    assert webhook_bot.rows(StripeEvent) == [] and webhook_bot.rows(StripeSubscription) == []


def test_stale_signature_is_refused(webhook_bot):
    event = make_event("customer.subscription.created", _sub())
    r = webhook_bot.post_event(event, timestamp=int(time.time()) - 301)
    assert r.status_code == 400 and "tolerance" in r.json()["error"]
    r = webhook_bot.post_event(event, timestamp=int(time.time()) + 400)
    assert r.status_code == 400
    assert webhook_bot.rows(StripeEvent) == []
    r = webhook_bot.post_event(event, timestamp=int(time.time()) - 250)  # inside the 300 s tolerance
    assert r.status_code == 200


def test_only_a_body_that_is_not_json_gets_400(webhook_bot):
    for body in ("{not json", "[1, 2]", "\xff\xfe", ""):
        r = webhook_bot.post_event(body)
        assert r.status_code == 400, body
        assert "malformed" in r.json()["error"] and "JSON" in r.json()["error"]
    assert webhook_bot.rows(StripeEvent) == []
    # Signed JSON objects that are not events as Stripe sends them: stored as failed with the reason, 200.
    for body in (json.dumps({"id": "evt_x", "type": "customer.created"}),
                 json.dumps({"type": "x", "created": 1, "data": {}})):
        r = webhook_bot.post_event(body)
        assert r.status_code == 200 and r.json()["status"] == "failed", body
    stored = {e.id: e for e in webhook_bot.rows(StripeEvent)}
    assert stored["evt_x"].status == "failed" and "no data object" in stored["evt_x"].error
    assert "not a plausible time" in stored["evt_x"].error
    [made_up] = [e for e in stored.values() if e.id != "evt_x"]
    assert made_up.id.startswith("evt_unidentified_") and "no evt_ id" in made_up.error


def test_duplicate_delivery_is_stored_and_applied_once(webhook_bot):
    event = make_event("checkout.session.completed", _session())
    first = webhook_bot.post_event(event)
    assert first.status_code == 200 and first.json()["status"] == "processed"
    for _ in range(3):
        again = webhook_bot.post_event(event)
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(webhook_bot.rows(StripeEvent)) == 1
    [account] = webhook_bot.rows(Account, Account.id == "acct_buyer")
    assert account.balance == 100 and account.stripe_customer_id == "cus_buyer"
    [entry] = webhook_bot.rows(LedgerEntry)
    assert (entry.kind, entry.delta, entry.actor, entry.idempotency_key) == ("purchase", 100, "stripe",
                                                                              "checkout:cs_test_1")


def test_credit_pack_is_idempotent_on_the_session_id(webhook_bot):
    # Two different events about the same checkout session credit it once.
    for _ in range(2):
        r = webhook_bot.post_event(make_event("checkout.session.completed", _session("cs_same", credits="40")))
        assert r.status_code == 200
    assert [a.balance for a in webhook_bot.rows(Account, Account.id == "acct_buyer")] == [40]
    assert len(webhook_bot.rows(LedgerEntry)) == 1
    # Not a credit pack, or not paid yet: ignored, nothing credited.
    subscription = {**_session("cs_sub", credits="30"), "mode": "subscription"}
    r = webhook_bot.post_event(make_event("checkout.session.completed", subscription))
    assert r.json()["status"] == "ignored"
    r = webhook_bot.post_event(make_event("checkout.session.completed", _session("cs_unpaid", paid="unpaid")))
    assert r.json()["status"] == "processed"  # awaiting payment: credited at async_payment_succeeded
    assert len(webhook_bot.rows(LedgerEntry)) == 1


def test_refunded_credit_pack_is_flagged_not_clawed_back(webhook_bot):
    webhook_bot.post_event(make_event("checkout.session.completed", _session("cs_r", credits="30")))
    charge = {"id": "ch_1", "object": "charge", "customer": "cus_buyer", "payment_intent": "pi_cs_r",
              "amount_refunded": 900, "currency": "usd", "refunded": True}
    r = webhook_bot.post_event(make_event("charge.refunded", charge))
    assert r.json()["status"] == "processed"
    [event] = webhook_bot.rows(StripeEvent, StripeEvent.type == "charge.refunded")
    assert "credit pack of 30 credits on acct_buyer" in event.detail
    assert webhook_bot.rows(Account, Account.id == "acct_buyer")[0].balance == 30


def test_out_of_order_updates_never_overwrite_newer_state(webhook_bot):
    now = int(time.time())
    newer = make_event("customer.subscription.updated", _sub(status="canceled"), created=now - 10)
    older = make_event("customer.subscription.updated", _sub(status="active"), created=now - 60)
    created = make_event("customer.subscription.created", _sub(status="incomplete"), created=now - 120)
    for event in (newer, older, created):
        assert webhook_bot.post_event(event).status_code == 200
    [sub] = webhook_bot.rows(StripeSubscription)
    assert sub.status == "canceled" and sub.version == now - 10
    statuses = {e.id: (e.status, e.detail) for e in webhook_bot.rows(StripeEvent)}
    assert statuses[newer["id"]][0] == "processed"
    assert statuses[older["id"]][0] == "ignored" and "newer state already mirrored" in statuses[older["id"]][1]
    assert statuses[created["id"]][0] == "ignored"
    # A genuinely newer event still applies.
    webhook_bot.post_event(make_event("customer.subscription.updated", _sub(status="active", cancel=True),
                                     created=now))
    [sub] = webhook_bot.rows(StripeSubscription)
    assert (sub.status, sub.cancel_at_period_end) == ("active", True)


def test_unhandled_type_is_stored_as_ignored(webhook_bot):
    r = webhook_bot.post_event(make_event("payout.paid", {"id": "po_1", "object": "payout"}))
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    [event] = webhook_bot.rows(StripeEvent)
    assert event.status == "ignored" and "not a type the bot handles" in event.detail


def test_a_failing_handler_stores_the_event_as_failed_and_changes_nothing(webhook_bot):
    bad = make_event("checkout.session.completed", _session("cs_bad", credits="12abc"))
    r = webhook_bot.post_event(bad)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    [event] = webhook_bot.rows(StripeEvent)
    assert event.status == "failed" and "metadata.credits must be a positive whole number" in event.error
    assert webhook_bot.rows(LedgerEntry) == [] and webhook_bot.rows(Account) == []


def test_answers_503_only_when_the_event_cannot_be_stored(webhook_bot, db_url):
    """The database goes away: the event is refused with a 5xx so Stripe retries it later."""
    import asyncio

    from bot.db import Database

    services = webhook_bot.runtime.services
    if db_url.startswith("sqlite"):
        # An unwritable path: the file cannot even be created.
        dead = Database("sqlite+aiosqlite:////proc/revops-no-such-dir/revops.db")
    else:
        # A PostgreSQL database that was dropped under the bot.
        import asyncpg

        name = db_url.rsplit("/", 1)[1]
        admin = db_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"

        async def drop():
            conn = await asyncpg.connect(admin)
            try:
                await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())
        dead = services.db
    live, deliveries = services.db, webhook_bot.app.state.stripe_webhooks  # (the app's group commit)
    services.db = deliveries.db = dead
    try:
        event = make_event("customer.subscription.created", _sub())
        started = time.perf_counter()
        r = webhook_bot.post_event(event)
        assert r.status_code == 503, r.text
        assert time.perf_counter() - started < 5
        assert "could not store" in r.json()["error"]
        # Bad signatures are still 400 (checked before the database is touched).
        assert post_event(webhook_bot.http, "whsec_wrong", event).status_code == 400
    finally:
        services.db = deliveries.db = live


def test_credits_command_shows_balance_and_entries(webhook_bot):
    from tests.support.harness import VIEWER

    webhook_bot.post_event(make_event("checkout.session.completed", _session("cs_c1", credits="100")))
    webhook_bot.post_event(make_event("checkout.session.completed", _session("cs_c2", credits="20")))
    for ref in ("acct_buyer", "cus_buyer", "buyer@example.com"):
        text = webhook_bot.slash_text(f"credits {ref}", user=VIEWER)
        assert "Account acct_buyer: 120 credits" in text
        assert "+20 purchase — credit pack bought (checkout cs_c2) (by stripe) → 120" in text
        assert "+100 purchase" in text
    text = webhook_bot.slash_text("credits nobody", user=VIEWER)
    assert "no account matches nobody" in text and "Usage: /revops credits &lt;account&gt;" in text
