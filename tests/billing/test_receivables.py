"""`receivables`: the priority collection list from the mirror (amount × days overdue), its filters,
Remind (templates/friendly_reminder.md rendered privately) and Resend for send_invoice invoices,
through signed requests on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.billing.models import StripeCustomer, StripeInvoice, StripePayment
from bot.clock import FakeClock
from tests.support.fake_stripe import FakeStripe, invoice
from tests.support.harness import RESPONDER, ROLES_TOML, VIEWER, Bot, flatten, make_settings


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_stripe():
    server = FakeStripe().start()
    yield server
    server.stop()


async def seed(bot: Bot, now) -> None:
    def inv(iid, cus, amount, days, *, status="open", collection="charge_automatically", attempts=1, due=True):
        return StripeInvoice(id=iid, customer_id=cus, status=status, currency="usd", amount_due=amount, amount_paid=0,
                             amount_remaining=amount if status == "open" else 0, attempt_count=attempts,
                             payment_failed=attempts > 0, collection_method=collection,
                             due_date=now - timedelta(days=days) if due else None,
                             invoice_created=now - timedelta(days=days + 1), version=0, updated_at=now)

    async with bot.db() as db, db.transaction() as s:
        s.add(StripeCustomer(id="cus_ADA", email="ada@example.com", name="Ada", version=0, updated_at=now))
        s.add(StripeCustomer(id="cus_BOB", email="bob@example.com", name="Bob", version=0, updated_at=now))
        s.add_all([
            inv("in_1BIG", "cus_ADA", 100_000, 2),       # 1000.00 × 2  = 2000 → 2nd
            inv("in_1OLD", "cus_BOB", 30_000, 20, collection="send_invoice", attempts=0),  # 300 × 20 = 6000 → 1st
            inv("in_1SMALL", "cus_ADA", 1_000, 30),      # 10 × 30 = 300 → 3rd
            inv("in_1NEW", "cus_BOB", 50_000, 0),        # due today: 0 → 4th
            inv("in_1PAID", "cus_ADA", 90_000, 40, status="paid"),  # not owed: never listed
        ])
        s.add(StripePayment(id="pi_BIG", customer_id="cus_ADA", invoice_id="in_1BIG", status="requires_payment_method",
                            currency="usd", amount=100_000, failure="Your card was declined.", version=1, updated_at=now))


@pytest.fixture
def rbot(tmp_path, db_url, fake_slack, fake_stripe, clock):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=fake_stripe.url)
    bot = Bot(settings, fake_slack, clock=clock).start()
    asyncio.run(seed(bot, clock.now()))
    yield bot
    bot.stop()


def order(text: str) -> list[str]:
    ids = ["in_1BIG", "in_1OLD", "in_1SMALL", "in_1NEW", "in_1PAID"]
    found = [(text.find(f"{i}. {iid}"), iid) for n, iid in enumerate(ids) for i in range(1, 6)
             if text.find(f"{i}. {iid}") >= 0]
    return [iid for _, iid in sorted(found)]


def test_ranked_by_amount_times_days_overdue(rbot):
    response = rbot.slash("receivables", user=VIEWER)
    assert response.status_code == 200
    text = flatten(response.json())
    assert order(text) == ["in_1OLD", "in_1BIG", "in_1SMALL", "in_1NEW"]
    assert "in_1OLD bob@example.com — 300.00 USD, 20 days overdue, 0 attempts" in text
    assert "in_1BIG ada@example.com — 1,000.00 USD, 2 days overdue, 1 attempts — last failure: Your card was declined." in text
    assert "in_1PAID" not in text
    actions = [e for b in response.json().get("blocks", []) if b["type"] == "actions" for e in b["elements"]]
    assert len({e["action_id"] for e in actions}) == len(actions)  # Slack refuses a message repeating one
    remind = [e["value"] for e in actions if e["action_id"].split("~")[0] == "revops:receivables.remind"]
    resend = [e["value"] for e in actions if e["action_id"].split("~")[0] == "revops:invoices.resend"]
    assert remind == ["in_1OLD", "in_1BIG", "in_1SMALL", "in_1NEW"] and resend == ["in_1OLD"]


def test_filters_min_overdue_and_limit(rbot):
    assert order(rbot.slash_text("receivables --min 250", user=VIEWER)) == ["in_1OLD", "in_1BIG", "in_1NEW"]
    assert order(rbot.slash_text("receivables --overdue 7d", user=VIEWER)) == ["in_1OLD", "in_1SMALL"]
    limited = rbot.slash_text("receivables --limit 2", user=VIEWER)
    assert order(limited) == ["in_1OLD", "in_1BIG"] and "Showing the first 2 of 4" in limited
    assert "No open invoices" in rbot.slash_text("receivables --min 5000", user=VIEWER)
    assert "--min takes an amount" in rbot.slash_text("receivables --min lots", user=VIEWER)


def test_remind_renders_the_operator_template_privately(rbot, fake_slack):
    answer = rbot.click_and_wait("revops:receivables.remind", "in_1OLD", user=RESPONDER)
    text = flatten(answer)
    assert "Friendly reminder, ready to send to bob@example.com" in text
    assert "Hello Bob," in text and "invoice in_1OLD for 300.00 USD is 20 days past due (due 2025-12-16)" in text
    assert answer.get("response_type", "ephemeral") == "ephemeral"  # only the person who clicked sees it
    assert "revops:invoices.resend" in str(answer)  # send_invoice: Resend offered next to it
    plain = flatten(rbot.click_and_wait("revops:receivables.remind", "in_1BIG", user=RESPONDER))
    assert "last attempt: Your card was declined." in plain and "revops:invoices.resend" not in plain
    assert fake_slack.calls_of("chat.postMessage") == []  # nothing was posted to a channel


def test_remind_uses_an_operator_edited_template(tmp_path, db_url, fake_slack, fake_stripe, clock):
    own = tmp_path / "templates"
    own.mkdir()
    (own / "friendly_reminder.md").write_text("Dear {{ recipient }}, {{ invoice }} ({{ amount }}) is open.\n")
    config = tmp_path / "own.toml"
    config.write_text(f'templates_dir = "{own}"\n' + ROLES_TOML)
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=fake_stripe.url,
                             revops_config=str(config))
    bot = Bot(settings, fake_slack, clock=clock).start()
    try:
        asyncio.run(seed(bot, clock.now()))
        text = flatten(bot.click_and_wait("revops:receivables.remind", "in_1SMALL", user=RESPONDER))
        assert "Dear Ada, in_1SMALL (10.00 USD) is open." in text
    finally:
        bot.stop()


def test_resend_from_the_list_reaches_stripe(rbot, fake_stripe):
    fake_stripe.add(invoice("in_1OLD", "cus_BOB", collection="send_invoice", due_days_ago=20, attempts=0,
                            amount=30_000))
    text = flatten(rbot.click_and_wait("revops:invoices.resend", "in_1OLD", user=RESPONDER, timeout=20))
    assert "Invoice in_1OLD sent to the customer again." in text
    assert [c.path for c in fake_stripe.posts()] == ["/v1/invoices/in_1OLD/send"]
