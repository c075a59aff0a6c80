"""Where credits come from (issue item 6): `[credits.packs]` by Price id, Product id or lookup key,
Price metadata, session metadata; only payment-mode sessions; a bank-debit pack credited once at
payment whatever the order; a guest checkout matched by email or stored failed and listed by
reconcile. Line items are fetched at the pinned version from a Stripe stand-in (localstripe has no
Checkout) before the transaction — on SQLite and PostgreSQL."""

import pytest

from bot.billing.models import Account, LedgerEntry, StripeEvent

from tests.support.harness import APPROVER, RESPONDER, Bot, make_settings
from tests.support.localstripe import StripeFront

from .conftest import StripeBot
from . import shapes
from .shapes import NOW, PINNED, event

PACKS = """
[credits.packs]
price_1Pack100 = 100
prod_Credits50 = 50
credits_lookup_25 = 25
"""


@pytest.fixture
def front(localstripe):
    server = StripeFront(localstripe.url).start()
    yield server
    server.stop()


@pytest.fixture
def pack_bot(tmp_path, db_url, fake_slack, localstripe, front):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=PACKS, stripe_api_base=front.url)
    bot = Bot(settings, fake_slack).start()
    yield StripeBot(bot, localstripe)
    bot.stop()


def _items(front, session_id, *items):
    front.serve_list(f"/v1/checkout/sessions/{session_id}/line_items", list(items))


def _pack_price(price_id, product="prod_Other", lookup_key=None, metadata=None):
    return shapes.price(price_id, shapes.product(product) if isinstance(product, str) else product, 1000,
                        lookup_key=lookup_key, recurring=False, metadata=metadata)


def _ledger(bot, account):
    return [(e.delta, e.idempotency_key) for e in bot.rows(LedgerEntry, LedgerEntry.account_id == account)]


def _paid(session_id, **kw):
    return event("checkout.session.completed", shapes.checkout_session(session_id, **kw))


def test_packs_by_price_product_and_lookup_key_and_price_metadata_times_quantity(pack_bot, front):
    account = "acct_packs"
    cases = [
        ("cs_test_a1", [(_pack_price("price_1Pack100"), 2)], 200),
        ("cs_test_a2", [(_pack_price("price_x2", product="prod_Credits50"), 1)], 50),
        ("cs_test_a3", [(_pack_price("price_x3", lookup_key="credits_lookup_25"), 3)], 75),
        ("cs_test_a4", [(_pack_price("price_x4", metadata={"credits": "10"}), 2)], 20),
        ("cs_test_a5", [(_pack_price("price_1Pack100"), 1), (_pack_price("price_tshirt"), 1)], 100),
    ]
    for session_id, items, _ in cases:
        _items(front, session_id, *[shapes.line_item(f"li_{session_id}{n}", p, q) for n, (p, q) in enumerate(items)])
        r = pack_bot.post_event(_paid(session_id, client_reference_id=account))
        assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    assert sorted(_ledger(pack_bot, account)) == sorted((credits, f"checkout:{sid}") for sid, _, credits in cases)
    [a] = pack_bot.rows(Account, Account.id == account)
    assert a.balance == 445
    # Fetched at the pinned version, and kept with the event for a replay of the stored copy.
    fetches = [r for r in front.requests if r[1].endswith("/line_items")]
    assert len(fetches) == 5 and {r[2] for r in fetches} == {PINNED}
    [stored] = pack_bot.rows(StripeEvent, StripeEvent.object_id == "cs_test_a1")
    assert stored.payload["revops"]["fetched"]["line_items"][0]["quantity"] == 2
    [entry] = [e for e in pack_bot.rows(LedgerEntry) if e.idempotency_key == "checkout:cs_test_a1"]
    assert entry.reason == "credit pack bought (checkout cs_test_a1: 2 × price_1Pack100)"


def test_only_payment_mode_sessions_grant_credits_and_session_metadata_still_works(pack_bot, front):
    sub = _paid("cs_test_sub", mode="subscription", client_reference_id="acct_m", metadata={"credits": "30"})
    r = pack_bot.post_event(sub)
    assert r.json()["status"] == "ignored"
    [stored] = pack_bot.rows(StripeEvent, StripeEvent.id == sub["id"])
    assert "only payment-mode sessions grant credits" in stored.detail
    meta = _paid("cs_test_meta", client_reference_id="acct_m", metadata={"credits": "30"})
    assert pack_bot.post_event(meta).json()["status"] == "processed"
    assert _ledger(pack_bot, "acct_m") == [(30, "checkout:cs_test_meta")]
    _items(front, "cs_test_none", shapes.line_item("li_n", _pack_price("price_tshirt")))
    plain = _paid("cs_test_none", client_reference_id="acct_m")
    assert pack_bot.post_event(plain).json()["status"] == "ignored"
    assert not [r for r in front.requests if "cs_test_sub" in r[1] or "cs_test_meta" in r[1]]  # no fetch needed


@pytest.mark.parametrize("order", ["completed first", "async success first"])
def test_a_bank_debit_pack_is_credited_once_at_payment_whatever_the_order(pack_bot, front, order):
    _items(front, "cs_test_sepa", shapes.line_item("li_s", _pack_price("price_1Pack100"), 1))
    completed = event("checkout.session.completed", shapes.checkout_session(
        "cs_test_sepa", payment_status="unpaid", customer="cus_sepa", client_reference_id="acct_sepa"), NOW)
    succeeded = event("checkout.session.async_payment_succeeded", shapes.checkout_session(
        "cs_test_sepa", payment_status="paid", customer="cus_sepa", client_reference_id="acct_sepa"), NOW + 86400)
    events = [completed, succeeded] if order == "completed first" else [succeeded, completed]
    statuses = [pack_bot.post_event(e).json()["status"] for e in events + events]
    assert statuses[2:] == ["duplicate", "duplicate"] and set(statuses[:2]) == {"processed"}
    assert _ledger(pack_bot, "acct_sepa") == [(100, "checkout:cs_test_sepa")]
    [done] = pack_bot.rows(StripeEvent, StripeEvent.id == completed["id"])
    assert ("credits already added" in done.detail) if order != "completed first" else (
        "added at checkout.session.async_payment_succeeded" in done.detail)


def test_a_failed_bank_debit_and_an_expired_session_credit_nothing(pack_bot):
    unpaid = shapes.checkout_session("cs_test_fail", payment_status="unpaid", client_reference_id="acct_f",
                                     metadata={"credits": "40"})
    for kind in ("checkout.session.completed", "checkout.session.async_payment_failed", "checkout.session.expired"):
        assert pack_bot.post_event(event(kind, unpaid)).json()["status"] == "processed"
    assert pack_bot.rows(LedgerEntry) == []


def test_guest_checkouts_by_email_or_stored_failed_and_listed_by_reconcile(pack_bot, front):
    pack_bot.post_event(event("customer.created", shapes.customer("cus_known", "known@example.com",
                                                                  user_id="acct_known")))
    guest = _paid("cs_test_guest", email="Known@Example.com", metadata={"credits": "15"})
    assert pack_bot.post_event(guest).json()["status"] == "processed"
    assert _ledger(pack_bot, "acct_known") == [(15, "checkout:cs_test_guest")]
    stranger = _paid("cs_test_stranger", email="nobody@example.com", metadata={"credits": "15"})
    r = pack_bot.post_event(stranger)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    [stored] = pack_bot.rows(StripeEvent, StripeEvent.id == stranger["id"])
    assert "guest checkout cs_test_stranger: no account has the buyer's email nobody@example.com" in stored.error
    text = pack_bot.answer("reconcile --days 1", user=RESPONDER)
    assert "Checkouts not credited: 1 paid" in text and stranger["id"] in text and "nobody@example.com" in text


def test_line_items_that_cannot_be_fetched_fail_the_event_and_replay_credits_it(pack_bot, front):
    front.serve("GET", "/v1/checkout/sessions/cs_test_later/line_items",
                {"error": {"type": "api_error", "message": "An unknown error occurred"}}, status=500)
    paid = _paid("cs_test_later", client_reference_id="acct_later")
    r = pack_bot.post_event(paid)
    assert r.status_code == 200 and r.json()["status"] == "failed"
    [stored] = pack_bot.rows(StripeEvent, StripeEvent.id == paid["id"])
    assert "its line items could not be fetched" in stored.error
    assert pack_bot.rows(LedgerEntry) == []
    _items(front, "cs_test_later", shapes.line_item("li_l", _pack_price("price_1Pack100"), 1))
    text = pack_bot.answer(f"replay {paid['id']}", user=RESPONDER)
    assert "+100 credits to acct_later" in text and "stored copy" in text
    assert _ledger(pack_bot, "acct_later") == [(100, "checkout:cs_test_later")]
    text = pack_bot.answer(f"replay {paid['id']}", user=APPROVER)
    assert "already applied" in text and len(pack_bot.rows(LedgerEntry)) == 1
