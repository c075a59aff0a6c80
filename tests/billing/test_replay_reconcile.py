"""replay, replay failed, reconcile and its Replay-missed button, against localstripe."""

import asyncio

from bot.billing.models import Account, StripeEvent, StripeSubscription
from bot.billing.views import daily_reconcile
from bot.db import Database

from tests.support.harness import ADMIN, APPROVER, RESPONDER, VIEWER
from tests.support.localstripe import make_event


def _before_the_webhook(stripe_bot):
    """A customer and subscription created while the bot's webhook was not registered."""
    stripe = stripe_bot.stripe
    stripe.mute_webhook()
    stripe.create_plan("pro-monthly")
    customer = stripe.create_customer("grace@example.com", name="Grace Hopper", user_id="acct_grace")
    sub = stripe.create_subscription(customer["id"])
    return customer, sub


def test_reconcile_finds_missed_events_and_the_button_repairs_them(stripe_bot):
    customer, sub = _before_the_webhook(stripe_bot)
    missed = [e for e in stripe_bot.stripe.events()]
    assert stripe_bot.rows(StripeEvent) == []

    ack, answer = stripe_bot.ask("reconcile --days 2", user=RESPONDER)
    assert "Working on it" in ack
    from tests.support.harness import flatten

    text = flatten(answer)
    assert "Stripe and the bot differ" in text
    assert "Active subscriptions: Stripe 1, mirror 0" in text
    assert f"active in Stripe, not in the mirror: {sub['id']}" in text
    assert f"Missed events: {len(missed)} that Stripe has and the bot never stored" in text
    assert f"{len(missed)} / 0" in text and "differs" in text
    assert "stale" in text
    [button] = [b for b in answer["blocks"][-1]["elements"] if b["action_id"] == "revops:reconcile.replay_missed"]
    assert button["text"]["text"] == f"Replay {len(missed)} missed events"

    # A responder may not replay; an approver may.
    denied = stripe_bot.click("reconcile.replay_missed", button["value"], user=RESPONDER)
    assert "needs the approver role" in denied and stripe_bot.rows(StripeEvent) == []
    done = stripe_bot.click("reconcile.replay_missed", button["value"], user=APPROVER)
    assert f"Replayed {len(missed)} missed events" in done
    stored = stripe_bot.rows(StripeEvent)
    assert {e.id for e in stored} == {e["id"] for e in missed}
    assert all(e.source == "reconcile" for e in stored)
    [mirrored] = stripe_bot.rows(StripeSubscription, StripeSubscription.id == sub["id"])
    assert mirrored.status == "active"
    assert stripe_bot.rows(Account, Account.id == "acct_grace")

    text = stripe_bot.answer("reconcile", user=RESPONDER)
    assert "Stripe and the bot agree" in text and "Missed events: none" in text and "fresh" in text
    # Clicking the old button again changes nothing.
    assert "No missed events any more" in stripe_bot.click("reconcile.replay_missed", button["value"], user=APPROVER)


def test_replay_one_event(stripe_bot):
    customer, sub = _before_the_webhook(stripe_bot)
    [created] = [e for e in stripe_bot.stripe.events(type="customer.subscription.created")]
    text = stripe_bot.answer(f"replay {created['id']}", user=RESPONDER)
    assert f"Replayed {created['id']} (customer.subscription.created)" in text
    assert "never received this event; it is stored now" in text
    [mirrored] = stripe_bot.rows(StripeSubscription)
    assert mirrored.id == sub["id"] and mirrored.status == "active"
    text = stripe_bot.answer(f"replay {created['id']}", user=RESPONDER)
    assert "was already applied; nothing changed" in text
    [event] = stripe_bot.rows(StripeEvent)
    assert event.attempts == 2 and event.status == "processed"

    text = stripe_bot.answer("replay evt_doesnotexist", user=RESPONDER)
    assert "No event evt_doesnotexist: Stripe does not know it and the bot never received it." in text
    assert "needs the responder role" in stripe_bot.answer(f"replay {created['id']}", user=VIEWER)
    assert "expected an evt_… id" in stripe_bot.answer("replay cus_123", user=RESPONDER)


def test_replay_uses_the_stored_copy_when_stripe_no_longer_has_it(stripe_bot):
    event = make_event("customer.subscription.created", {
        "id": "sub_gone", "object": "subscription", "customer": "cus_gone", "status": "active",
        "cancel_at_period_end": False, "items": {"data": [{"plan": {"id": "pro"}}]}})
    assert stripe_bot.post_event(event).status_code == 200
    text = stripe_bot.answer(f"replay {event['id']}", user=RESPONDER)
    assert "already applied" in text and "Stripe no longer has this event: replayed the bot's stored copy" in text


def test_an_event_received_by_webhook_and_replayed_is_applied_once(stripe_bot):
    event = make_event("checkout.session.completed", {
        "id": "cs_w", "object": "checkout.session", "customer": "cus_w", "client_reference_id": "acct_w",
        "payment_status": "paid", "mode": "payment", "metadata": {"credits": "15"}})
    assert stripe_bot.post_event(event).json()["status"] == "processed"
    text = stripe_bot.answer(f"replay {event['id']}", user=RESPONDER)
    assert "was already applied; nothing changed" in text and "15 credits already added to acct_w" in text
    assert stripe_bot.post_event(event).json()["status"] == "duplicate"
    assert [a.balance for a in stripe_bot.rows(Account, Account.id == "acct_w")] == [15]
    [stored] = stripe_bot.rows(StripeEvent)
    assert (stored.status, stored.source, stored.attempts) == ("processed", "webhook", 2)


def _fail_a_stored_event(stripe_bot, event):
    """Store an event as failed, as a past bug or outage would have left it."""
    async def go():
        db = Database(stripe_bot.settings.env.database_url)
        try:
            async with db.transaction() as session:
                from bot.billing.events import event_row

                row = event_row(event, source="webhook", now=stripe_bot.runtime.services.clock.now())
                row.update(status="failed", error="RuntimeError: simulated outage", detail="simulated")
                session.add(StripeEvent(**row))
        finally:
            await db.dispose()
    asyncio.run(go())


def test_replay_failed_after_a_confirm(stripe_bot):
    event = make_event("checkout.session.completed", {
        "id": "cs_f", "object": "checkout.session", "customer": "cus_f", "client_reference_id": "acct_f",
        "payment_status": "paid", "mode": "payment", "metadata": {"credits": "25"}})
    _fail_a_stored_event(stripe_bot, event)
    assert "needs the approver role" in stripe_bot.slash_text("replay failed", user=RESPONDER)
    text = stripe_bot.slash_text("replay failed --since 2h", user=APPROVER)
    assert "1 failed Stripe event received in the last 2h. Replay them?" in text
    assert "revops:replay.failed_confirm" in text and "7200" in text
    assert stripe_bot.rows(Account) == []
    done = stripe_bot.click("replay.failed_confirm", "7200", user=APPROVER)
    assert "Replayed 1 failed events: 1 now applied, 0 still failing." in done
    assert [a.balance for a in stripe_bot.rows(Account, Account.id == "acct_f")] == [25]
    [stored] = stripe_bot.rows(StripeEvent)
    assert stored.status == "processed" and stored.attempts == 2 and stored.error is None
    assert "No failed Stripe events" in stripe_bot.slash_text("replay failed", user=APPROVER)
    # Replaying again credits nothing twice.
    stripe_bot.answer(f"replay {event['id']}", user=RESPONDER)
    assert [a.balance for a in stripe_bot.rows(Account, Account.id == "acct_f")] == [25]


def test_replay_failed_button_of_the_customer_view(stripe_bot):
    event = make_event("checkout.session.completed", {
        "id": "cs_g", "object": "checkout.session", "customer": "cus_g", "client_reference_id": "acct_g",
        "payment_status": "paid", "mode": "payment", "metadata": {"credits": "5"}})
    _fail_a_stored_event(stripe_bot, event)
    assert "needs the approver role" in stripe_bot.click("replay.failed_for", "cus_g", user=RESPONDER)
    done = stripe_bot.click("replay.failed_for", "cus_g", user=APPROVER)
    assert "Replayed 1 failed events of cus_g: 1 now applied" in done


def test_dry_run_replay_changes_nothing(stripe_bot):
    customer, sub = _before_the_webhook(stripe_bot)
    [created] = stripe_bot.stripe.events(type="customer.subscription.created")
    assert "Dry-run is now on" in stripe_bot.slash_text("dryrun on", user=ADMIN)
    ack, answer = stripe_bot.ask(f"replay {created['id']}", user=RESPONDER)
    from tests.support.harness import flatten

    assert "dry run" in flatten(answer).lower()
    assert stripe_bot.rows(StripeEvent) == [] and stripe_bot.rows(StripeSubscription) == []


def test_daily_reconcile_hook(stripe_bot):
    _before_the_webhook(stripe_bot)
    reply = asyncio.run(_run_daily(stripe_bot))
    assert reply.text.startswith("Daily reconcile — ") and not reply.private
    assert any("Missed events" in line for line in reply.lines)
    assert reply.buttons and reply.buttons[0].action == "reconcile.replay_missed"


async def _run_daily(stripe_bot):
    from bot.billing.stripe_client import StripeClient
    from bot.app import build_services

    services = build_services(stripe_bot.settings)
    try:
        return await daily_reconcile(services)
    finally:
        await services.db.dispose()
        if isinstance(services.stripe, StripeClient):
            await services.stripe.aclose()
