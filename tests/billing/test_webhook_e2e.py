"""A customer and a subscription created in localstripe reach the mirror through signed webhooks,
and the customer view shows Stripe and the mirror side by side."""

from bot.billing.models import Account, StripeCustomer, StripeEvent, StripeInvoice, StripeSubscription

from tests.support.harness import APPROVER, RESPONDER, VIEWER


def _subscribed(stripe_bot, email="ada@example.com", user_id="acct_ada"):
    stripe_bot.connect_webhook()
    stripe = stripe_bot.stripe
    stripe.create_plan("pro-monthly")
    customer = stripe.create_customer(email, name="Ada Lovelace", user_id=user_id)
    sub = stripe.create_subscription(customer["id"])
    stripe_bot.wait_rows(StripeSubscription, StripeSubscription.id == sub["id"])
    stripe_bot.wait_rows(StripeInvoice, StripeInvoice.customer_id == customer["id"], StripeInvoice.status == "paid")
    return customer, sub


def test_customer_and_subscription_reach_the_mirror(stripe_bot):
    customer, sub = _subscribed(stripe_bot)
    [mirrored_sub] = stripe_bot.rows(StripeSubscription, StripeSubscription.id == sub["id"])
    assert mirrored_sub.status == "active"
    assert mirrored_sub.plan == "pro-monthly"
    assert mirrored_sub.customer_id == customer["id"]
    assert mirrored_sub.current_period_end is not None
    [mirrored] = stripe_bot.rows(StripeCustomer, StripeCustomer.id == customer["id"])
    assert mirrored.email == "ada@example.com" and mirrored.account_id == "acct_ada"
    [account] = stripe_bot.rows(Account, Account.id == "acct_ada")
    assert account.stripe_customer_id == customer["id"] and account.balance == 0
    events = stripe_bot.rows(StripeEvent)
    handled = [e for e in events if e.type.startswith(("customer.", "invoice."))]
    assert handled and {e.status for e in handled} == {"processed"}
    assert {e.status for e in events if e.type.startswith("payment_intent.")} <= {"processed"}
    assert all(e.source == "webhook" for e in events)
    assert len({e.id for e in events}) == len(events)


def test_customer_without_user_id_gets_an_account_named_after_it(stripe_bot):
    stripe_bot.connect_webhook()
    customer = stripe_bot.stripe.create_customer("bob@example.com", card=False)
    stripe_bot.wait_rows(StripeCustomer, StripeCustomer.id == customer["id"])
    [account] = stripe_bot.rows(Account, Account.id == customer["id"])
    assert account.balance == 0 and account.email == "bob@example.com"


def test_customer_view_shows_both_sides(stripe_bot):
    customer, sub = _subscribed(stripe_bot)
    for ref in ("ada@example.com", customer["id"], "acct_ada"):
        ack, answer = stripe_bot.ask(f"customer {ref}", user=VIEWER)
        assert "Working on it" in ack
        from tests.support.harness import flatten

        text = flatten(answer)
        assert f"Customer {customer['id']} — Ada Lovelace (ada@example.com)" in text
        assert "Stripe and the mirror agree" in text
        assert f"{sub['id']}: active, pro-monthly" in text and "| active, pro-monthly" in text
        assert "Credits (account acct_ada): 0" in text
        assert "customer.subscription.created" in text and "processed" in text
        assert "revops:sync.customer" in text and "revops:replay.failed_for" in text
        assert answer["response_type"] == "ephemeral"


def test_customer_view_lists_mismatches(stripe_bot):
    customer, sub = _subscribed(stripe_bot)
    # The mirror missed the cancellation: Stripe says canceled, the bot still says active.
    stripe_bot.stripe.mute_webhook()
    stripe_bot.stripe.cancel_subscription(sub["id"])
    text = stripe_bot.answer(f"customer {customer['id']}", user=VIEWER)
    assert "1 mismatch" in text
    assert f"subscription {sub['id']} status differs: Stripe canceled, mirror active" in text

    # Sync from Stripe (a responder's click) repairs it and shows the diff.
    synced = stripe_bot.click("sync.customer", customer["id"], user=RESPONDER)
    assert f"subscription {sub['id']}: status active → canceled" in synced
    text = stripe_bot.answer(f"customer {customer['id']}", user=VIEWER)
    assert "Stripe and the mirror agree" in text


def test_unknown_customer_gets_the_usage_line(stripe_bot):
    text = stripe_bot.answer("customer nobody@example.com", user=VIEWER)
    assert "no customer matches nobody@example.com in Stripe or in the local mirror" in text
    assert "Usage: /revops customer &lt;ref&gt;" in text  # Slack shows "<ref>"


def test_sync_shows_the_diff_and_needs_a_responder(stripe_bot):
    customer, sub = _subscribed(stripe_bot)
    text = stripe_bot.answer(f"sync {customer['id']}", user=VIEWER)
    assert "needs the responder role" in text
    text = stripe_bot.answer(f"sync {sub['id']}", user=RESPONDER)
    assert "the mirror already matched Stripe" in text
    text = stripe_bot.answer("sync sub_doesnotexist", user=RESPONDER)
    assert "Stripe has no subscription sub_doesnotexist" in text
    text = stripe_bot.answer("sync in_123", user=APPROVER)
    assert "expected a sub_… or cus_… id" in text
