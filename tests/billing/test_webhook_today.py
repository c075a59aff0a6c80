"""POST /webhooks/stripe with what a real account sends today: the pinned API version, live and
test mode, connected accounts, thin events and poison events — on SQLite and PostgreSQL."""

import json
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import stripe
from pydantic import SecretStr
from sqlalchemy.exc import DataError

from bot.billing.events import store_alone
from bot.billing.models import Account, LedgerEntry, StripeCustomer, StripeEvent, StripeSubscription
from bot.billing.stripe_client import StripeClient
from bot.billing.webhooks import ingest
from bot.db import Database

from tests.support.harness import RESPONDER, VIEWER, WEBHOOK_SECRET
from tests.support.localstripe import StripeFront, signed_headers

from . import shapes
from .shapes import PINNED, event, thin_event


def _stored(bot, event_id):
    [row] = bot.rows(StripeEvent, StripeEvent.id == event_id)
    return row


# -- 1. one pinned API version -----------------------------------------------------------------------


def test_the_pinned_version_is_the_sdks_own_and_every_call_sends_it(localstripe, stripe_bot):
    assert stripe.VERSION.startswith("16.") and PINNED == stripe.api_version
    settings = stripe_bot.bot.settings
    assert settings.env.stripe_api_version == PINNED
    front = StripeFront(localstripe.url).start()
    try:
        async def calls():
            client = StripeClient("sk_test_revops_1234567890abcdef", api_base=front.url, api_version=PINNED)
            try:
                await client.page("customer", limit=1)
                await client.retrieve("customer", "cus_missing")
            finally:
                await client.aclose()
        import asyncio
        asyncio.run(calls())
    finally:
        front.stop()
    assert [r[2] for r in front.requests] == [PINNED, PINNED] and front.requests[0][1] == "/v1/customers"
    assert stripe_bot.runtime.services.stripe.api_version == PINNED


def test_each_event_keeps_its_api_version_and_one_in_another_understood_version_is_applied(webhook_bot):
    today = event("customer.created", shapes.customer("cus_v1", "v1@example.com", user_id="acct_v1"))
    basil = event("customer.updated", shapes.customer("cus_v1", "v1-new@example.com", user_id="acct_v1"),
                  created=shapes.NOW + 5, api_version="2025-03-31.basil")
    for e in (today, basil):
        assert webhook_bot.post_event(e).json()["status"] == "processed"
    assert _stored(webhook_bot, today["id"]).api_version == PINNED
    assert _stored(webhook_bot, basil["id"]).api_version == "2025-03-31.basil"
    [customer] = webhook_bot.rows(StripeCustomer)
    assert customer.email == "v1-new@example.com"
    # /revops health says that events arrive in another version than the pin, and how to fix it.
    text = webhook_bot.answer("health", user=VIEWER)
    assert f"event log — last 7 days: events in another API version than {PINNED}: 1 at 2025-03-31.basil" in text


def test_an_event_of_a_version_the_bot_does_not_read_is_refetched_at_the_pin(localstripe, stripe_bot):
    made = localstripe.create_customer("refetch@example.com", name="Fetched", user_id="acct_rf", card=False)
    future = event("customer.updated", {**shapes.customer(made["id"], "stale-shape@example.com"), "email": None,
                                        "emails": ["stale-shape@example.com"]}, api_version="2099-01-01.future")
    r = stripe_bot.post_event(future)
    assert r.status_code == 200 and r.json()["status"] == "processed"
    [customer] = stripe_bot.rows(StripeCustomer, StripeCustomer.id == made["id"])
    assert customer.email == "refetch@example.com"  # the object as fetched at the pin, not the payload
    stored = _stored(stripe_bot, future["id"])
    assert stored.api_version == "2099-01-01.future"
    assert stored.payload["revops"]["fetched"]["api_version"] == PINNED


def test_without_stripe_an_unreadable_version_is_stored_failed_for_replay(webhook_bot):
    future = event("customer.updated", shapes.customer("cus_fut", "f@example.com"), api_version="2099-01-01.future")
    r = webhook_bot.post_event(future)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    stored = _stored(webhook_bot, future["id"])
    assert "2099-01-01.future is not one the bot reads" in stored.error and "Stripe is unreachable" in stored.error
    assert webhook_bot.rows(StripeCustomer) == []


def test_preflight_reads_the_webhook_endpoints_version_and_says_how_to_fix_it(localstripe, tmp_path, db_url,
                                                                              fake_slack):
    from tests.support.harness import Bot, make_settings
    front = StripeFront(localstripe.url).start()
    front.serve_list("/v1/webhook_endpoints", [
        {"id": "we_old", "object": "webhook_endpoint", "url": "https://revops.example.com/webhooks/stripe",
         "api_version": "2024-06-20", "status": "enabled", "enabled_events": ["*"], "livemode": False},
        {"id": "we_off", "object": "webhook_endpoint", "url": "https://old.example.com/hook",
         "api_version": None, "status": "disabled", "enabled_events": ["*"], "livemode": False}])
    bot = Bot(make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=front.url), fake_slack).start()
    try:
        url = bot.response_url()
        assert bot.slash("preflight", user=RESPONDER, response_url=url).status_code == 200
        from tests.support.harness import flatten
        text = flatten(bot.wait_response(url, timeout=20))
        assert "API version — " in text
        assert "webhook endpoint we_old (https://revops.example.com/webhooks/stripe) sends 2024-06-20" in text
        assert "we_off" not in text  # disabled endpoints do not count
        assert f"--api-version {PINNED}" in text and "STRIPE_WEBHOOK_SECRET" in text
        assert ("GET", "/v1/webhook_endpoints", PINNED) in front.requests
        # At the pin: pass.
        front.serve_list("/v1/webhook_endpoints", [
            {"id": "we_new", "object": "webhook_endpoint", "url": "https://revops.example.com/webhooks/stripe",
             "api_version": PINNED, "status": "enabled", "enabled_events": ["*"], "livemode": False}])
        url = bot.response_url()
        bot.slash("preflight", user=RESPONDER, response_url=url)
        text = flatten(bot.wait_response(url, timeout=20))
        assert f"calls send {PINNED}, the SDK's own; 1 webhook endpoint(s) at {PINNED}" in text
    finally:
        bot.stop()
        front.stop()


# -- 3. mode and account ---------------------------------------------------------------------------------


def test_a_live_event_never_changes_a_test_mode_mirror(webhook_bot):
    live = event("checkout.session.completed", shapes.checkout_session(
        "cs_live_1", client_reference_id="acct_live", metadata={"credits": "77"}), livemode=True)
    r = webhook_bot.post_event(live)
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    stored = _stored(webhook_bot, live["id"])
    assert stored.livemode is True and "live-mode event and a test-mode key" in stored.detail
    assert webhook_bot.rows(LedgerEntry) == [] and webhook_bot.rows(Account) == []
    live_customer = event("customer.created", shapes.customer("cus_live", "live@example.com"), livemode=True)
    assert webhook_bot.post_event(live_customer).json()["status"] == "ignored"
    assert webhook_bot.rows(StripeCustomer) == []
    text = webhook_bot.answer("health", user=VIEWER)
    assert "2 live-mode event(s) ignored: the key is a test-mode key" in text, text


def test_connected_account_events_are_stored_with_their_account_and_ignored_unless_listed(tmp_path, db_url,
                                                                                          fake_slack):
    from tests.support.harness import Bot, make_settings
    from tests.support.net import free_port
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=f"http://127.0.0.1:{free_port()}",
                             extra_toml='\n[stripe]\naccounts = ["acct_1Listed"]\n')
    bot = Bot(settings, fake_slack).start()
    try:
        from tests.billing.conftest import StripeBot
        running = StripeBot(bot, None)
        other = event("customer.created", shapes.customer("cus_conn1", "c1@example.com"), account="acct_1Other")
        listed = event("customer.created", shapes.customer("cus_conn2", "c2@example.com"), account="acct_1Listed")
        platform = event("customer.created", shapes.customer("cus_plat", "p@example.com"))
        assert running.post_event(other).json()["status"] == "ignored"
        assert running.post_event(listed).json()["status"] == "processed"
        assert running.post_event(platform).json()["status"] == "processed"
        assert _stored(running, other["id"]).account == "acct_1Other"
        assert "connected account acct_1Other, which [stripe] accounts does not list" in _stored(running, other["id"]).detail
        assert _stored(running, listed["id"]).account == "acct_1Listed" and _stored(running, platform["id"]).account is None
        assert sorted(c.id for c in running.rows(StripeCustomer)) == ["cus_conn2", "cus_plat"]
        text = running.answer("health", user=VIEWER)
        assert "1 event(s) of connected accounts not in [stripe] accounts ignored" in text
    finally:
        bot.stop()


# -- 4. thin events ----------------------------------------------------------------------------------------


def test_a_ping_and_thin_events_about_objects_the_mirror_does_not_keep_are_answered_200(webhook_bot):
    ping = thin_event("v2.core.event_destination.ping",
                      ("v2.core.event_destination", "ed_test_61R", "/v2/core/event_destinations/ed_test_61R"))
    meter = thin_event("v1.billing.meter.error_report_triggered",
                       ("billing.meter", "mtr_test_61R", "/v1/billing/meters/mtr_test_61R"))
    for thin in (ping, meter):
        r = webhook_bot.post_event(thin)
        assert r.status_code == 200 and r.json()["status"] == "ignored", r.text
    assert "a ping from the event destination" in _stored(webhook_bot, ping["id"]).detail
    stored = _stored(webhook_bot, meter["id"])
    assert "its related object is a billing.meter, which the mirror does not keep" in stored.detail
    assert stored.object_id == "mtr_test_61R" and stored.api_version is None
    # Its ISO 8601 `created` is the event's time.
    assert abs(stored.created.timestamp() - time.time()) < 60
    assert webhook_bot.post_event(ping).json()["status"] == "duplicate"


def test_a_thin_event_is_applied_by_fetching_its_related_object_at_the_pin(localstripe, stripe_bot):
    made = localstripe.create_customer("thin@example.com", name="Thin", user_id="acct_thin", card=False)
    thin = thin_event("v1.customer.updated", ("customer", made["id"], f"/v1/customers/{made['id']}"))
    r = stripe_bot.post_event(thin)
    assert r.status_code == 200 and r.json()["status"] == "processed"
    [customer] = stripe_bot.rows(StripeCustomer, StripeCustomer.id == made["id"])
    assert (customer.email, customer.account_id) == ("thin@example.com", "acct_thin")
    stored = _stored(stripe_bot, thin["id"])
    assert "thin event" in stored.detail and f"fetched at {PINNED}" in stored.detail


def test_a_thin_event_whose_object_cannot_be_fetched_is_stored_failed_and_replayed_later(webhook_bot):
    thin = thin_event("v1.customer.updated", ("customer", "cus_unreach", "/v1/customers/cus_unreach"))
    r = webhook_bot.post_event(thin)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert "could not be fetched" in _stored(webhook_bot, thin["id"]).error


def test_a_test_mode_bot_ignores_a_live_thin_event(webhook_bot):
    thin = thin_event("v1.customer.updated", ("customer", "cus_x", "/v1/customers/cus_x"), livemode=True)
    assert webhook_bot.post_event(thin).json()["status"] == "ignored"


# -- 5. poison events --------------------------------------------------------------------------------------


def _poison_bodies():
    base = event("customer.created", shapes.customer("cus_nul", "nul@example.com", name="Ada\u0000Lovelace"))
    long_id = {**event("customer.created", shapes.customer("cus_long", "long@example.com")), "id": "evt_" + "x" * 300}
    far = event("customer.created", shapes.customer("cus_far", "far@example.com"), created=10 ** 12)
    deep_data: object = "bottom"
    for _ in range(10_000):
        deep_data = [deep_data]
    deep = json.dumps({**event("customer.created", shapes.customer("cus_deep", "deep@example.com")),
                       "deep": None}).replace('"deep": null', '"deep": ' + "[" * 10_000 + "1" + "]" * 10_000)
    nan = json.dumps(event("invoice.paid", {**shapes.invoice("in_nan", "cus_nan", None), "amount_due": 1})
                     ).replace('"amount_due": 1', '"amount_due": NaN')
    return {"nul": json.dumps(base), "long": json.dumps(long_id), "far": json.dumps(far), "deep": deep, "nan": nan}


def test_poison_events_are_stored_failed_with_the_reason_and_answered_200(webhook_bot):
    bodies = _poison_bodies()
    answers = {name: webhook_bot.post_event(body) for name, body in bodies.items()}
    assert {name: r.status_code for name, r in answers.items()} == {name: 200 for name in bodies}
    assert {name: r.json()["status"] for name, r in answers.items()} == {name: "failed" for name in bodies}
    rows = {e.id: e for e in webhook_bot.rows(StripeEvent)}
    assert len(rows) == 5
    by = {name: rows[answers[name].json()["id"]] for name in bodies}
    assert "NUL characters" in by["nul"].error and "\u0000" not in json.dumps(by["nul"].payload)
    assert "Ada\ufffdLovelace" == by["nul"].payload["data"]["object"]["name"]
    assert len(by["long"].id) == 255 and by["long"].id.startswith("evt_xxx") and "304 characters" in by["long"].error
    assert "not a plausible time" in by["far"].error and by["far"].created.year == datetime.now(timezone.utc).year
    assert "nested" in by["deep"].error and by["deep"].type == "customer.created"
    assert "NaN or Infinity" in by["nan"].error
    assert webhook_bot.rows(StripeCustomer) == []  # none applied
    # Stripe's retry of a poison event is a duplicate, not a second row.
    again = {name: webhook_bot.post_event(body).json()["status"] for name, body in bodies.items()}
    assert again == {name: "duplicate" for name in bodies}
    assert len(webhook_bot.rows(StripeEvent)) == 5


async def test_an_event_the_database_refuses_to_store_is_stored_failed_and_answered_200(db_url):
    database = Database(db_url)
    await database.upgrade()
    services = SimpleNamespace(db=database, stripe=None, clock=SimpleNamespace(now=lambda: datetime.now(timezone.utc)),
                               settings=SimpleNamespace(env=SimpleNamespace(
                                   stripe_webhook_secret=SecretStr(WEBHOOK_SECRET))))

    async def refusing_store(event, now):
        raise DataError("INSERT INTO stripe_events …", {}, Exception("value too long"))

    body = json.dumps(event("customer.created", shapes.customer("cus_refused", "r@example.com")))
    try:
        answer = await ingest(services, body.encode(), signed_headers(WEBHOOK_SECRET, body)["Stripe-Signature"],
                              refusing_store)
        assert answer.status_code == 200 and answer.body["status"] == "failed"
        async with database.transaction() as session:
            [row] = (await session.execute(StripeEvent.__table__.select())).all()
        assert row.status == "failed" and "the database refused to store the event as it is (DataError)" in row.error
        assert row.type == "customer.created" and row.payload["revops"]["problem"] == row.error
        # Stored as failed, it is a duplicate the next time and replay finds it.
        again = await ingest(services, body.encode(), signed_headers(WEBHOOK_SECRET, body)["Stripe-Signature"],
                             lambda e, n: store_alone(database, e, n))
        assert again.status_code == 200 and again.body["status"] == "duplicate"
    finally:
        await database.dispose()
