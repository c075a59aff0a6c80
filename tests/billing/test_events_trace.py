"""`events` (the webhook log with reasons), `trace` (one payment followed end to end, in time
order) and `audit <account>` by any of the account's names — through signed Stripe webhooks in
today's shapes and signed Slack requests, on SQLite and PostgreSQL."""

import pytest

from bot.billing.models import LedgerEntry, StripeEvent

from tests.support.harness import APPROVER, RESPONDER, VIEWER, Bot, flatten, make_settings
from tests.support.net import free_port

from . import shapes
from .conftest import StripeBot
from .shapes import NOW, event


@pytest.fixture
def tbot(tmp_path, db_url, fake_slack):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=f"http://127.0.0.1:{free_port()}")
    bot = Bot(settings, fake_slack).start()
    yield StripeBot(bot, None)
    bot.stop()


def _post(bot, evt):
    response = bot.post_event(evt)
    assert response.status_code == 200, response.text
    return evt["id"]


def test_events_lists_the_webhook_log_newest_first_with_reasons_and_filters(tbot):
    created = _post(tbot, event("customer.created", shapes.customer("cus_evlog1", "ev@example.com"), NOW + 1))
    ignored = _post(tbot, event("customer.updated", shapes.customer("cus_evother", "o@example.com"), NOW + 2,
                                account="acct_other"))
    # A payment-mode session without credits in its metadata whose line items cannot be fetched: failed.
    failed = _post(tbot, event("checkout.session.completed", shapes.checkout_session(
        "cs_test_evfail", client_reference_id="acct_x"), NOW + 3))
    statuses = {e.id: e.status for e in tbot.rows(StripeEvent)}
    assert statuses == {created: "processed", ignored: "ignored", failed: "failed"}

    text = tbot.slash_text("events", user=VIEWER)
    assert "Stripe events (last 24 hours): 3" in text
    assert text.index(failed) < text.index(ignored) < text.index(created)  # newest first
    assert "connected account acct_other" in text  # the reason of the ignored one
    assert "line items could not be fetched" in text  # the reason of the failed one

    only_failed = tbot.slash_text("events --status failed", user=VIEWER)
    assert failed in only_failed and ignored not in only_failed and created not in only_failed
    assert "Stripe events (failed, last 24 hours): 1" in only_failed

    by_type = tbot.slash_text("events --type customer.created", user=VIEWER)
    assert created in by_type and ignored not in by_type and failed not in by_type
    prefix = tbot.slash_text("events --type customer.", user=VIEWER)
    assert created in prefix and ignored in prefix and failed not in prefix

    limited = tbot.slash_text("events --limit 1", user=VIEWER)
    assert "1 of 3" in limited and failed in limited and created not in limited and "--limit" in limited

    assert "No events match." in tbot.slash_text("events --since 1s --type invoice.paid", user=VIEWER)
    bad = tbot.slash_text("events --status broken", user=VIEWER)
    assert "must be one of processed, failed, ignored" in bad and "Usage" in bad


def _grant(bot, account, amount):
    before = len(bot.slack.calls_of("chat.postMessage"))
    answer = bot.slash_text(f"grant {account} {amount} goodwill after the outage", user=RESPONDER)
    assert "posted for approval" in answer, answer
    [approval] = bot.slack.wait_for("chat.postMessage", before + 1)[before:before + 1]
    buttons = {e["action_id"]: e for b in approval.params.get("blocks", []) if b["type"] == "actions"
               for e in b["elements"]}
    rid = buttons["revops:grants.approve"]["value"]
    answer = flatten(bot.click_and_wait("revops:grants.approve", rid, user=APPROVER))
    assert f"Approved request #{rid}" in answer, answer
    return rid


def test_trace_follows_one_payment_end_to_end_in_time_order(tbot):
    customer = _post(tbot, event("customer.created", shapes.customer("cus_trace01", "ada@example.com",
                                                                     user_id="acct_trace"), NOW + 1))
    checkout = _post(tbot, event("checkout.session.completed", shapes.checkout_session(
        "cs_test_trace01", customer="cus_trace01", client_reference_id="acct_trace", metadata={"credits": "30"},
        pi="pi_trace01"), NOW + 2))
    paid = _post(tbot, event("invoice.paid", shapes.invoice("in_trace01", "cus_trace01", None, status="paid",
                                                            paid=4900), NOW + 3))
    assert {e.id: e.status for e in tbot.rows(StripeEvent)} == {customer: "processed", checkout: "processed",
                                                                 paid: "processed"}
    [purchase] = tbot.rows(LedgerEntry, LedgerEntry.kind == "purchase")
    assert purchase.account_id == "acct_trace" and purchase.delta == 30 and purchase.ref == "pi_trace01"
    rid = _grant(tbot, "ada@example.com", 20)

    text = tbot.slash_text("trace cus_trace01", user=VIEWER)
    order = [customer, checkout, "+30 purchase on acct_trace", paid, "invoice in_trace01 now paid",
             f"grant on acct_trace: requested 20", "+20 grant on acct_trace"]
    positions = [text.find(piece) for piece in order]
    assert all(p >= 0 for p in positions), list(zip(order, positions))
    assert positions == sorted(positions), list(zip(order, positions))
    assert "customer.created" in text and "invoice.paid" in text and "→ processed" in text
    assert "Followed:" in text and "acct_trace" in text and "ada@example.com" in text

    # The session: its delivery and the purchase it made (the ledger's ref is its payment intent).
    session = tbot.slash_text("trace cs_test_trace01", user=VIEWER)
    assert checkout in session and "+30 purchase on acct_trace" in session and paid not in session
    # An event id: the delivery and what it is about.
    by_event = tbot.slash_text(f"trace {paid}", user=VIEWER)
    assert paid in by_event and "invoice in_trace01 now paid: 49.00 USD paid of 49.00 USD" in by_event
    assert checkout not in by_event

    # Bounded: the newest N, oldest first, "N of M" with how to see more.
    short = tbot.slash_text("trace acct_trace --limit 2", user=VIEWER)
    assert "the newest 2 of" in short and "--limit" in short
    assert "+20 grant on acct_trace" in short and customer not in short
    full = tbot.slash_text("trace acct_trace", user=VIEWER)
    assert full.index("+20 grant on acct_trace") < full.index("grants.approve on acct_trace: approved 20 credits")
    assert rid

    nothing = tbot.slash_text("trace pi_nobody", user=VIEWER)
    assert "Nothing stored mentions" in nothing


def test_audit_finds_an_account_by_id_customer_or_email(tbot):
    _post(tbot, event("customer.created", shapes.customer("cus_audit01", "Grace@Example.com",
                                                          user_id="acct_grace"), NOW + 1))
    rid = _grant(tbot, "cus_audit01", 15)
    for ref in ("acct_grace", "cus_audit01", "grace@example.com", "GRACE@example.com"):
        text = tbot.slash_text(f"audit {ref}", user=APPROVER)
        assert "No records match." not in text, ref
        assert "grants.approve" in text and "approved 15 credits" in text and "requested 15 credits" in text, ref
    assert "No records match." in tbot.slash_text("audit nobody@example.com", user=APPROVER)


def test_trace_shows_incident_timeline_entries_and_a_failed_delivery(tbot):
    failed = _post(tbot, event("invoice.payment_failed", shapes.invoice("in_tracefail", "cus_tracefail", None,
                                                                        attempts=1), NOW + 1))
    assert "Incident #" in tbot.slash_text("incident declare P2 checkout payments failing", user=RESPONDER)
    assert "Added to the timeline" in tbot.slash_text(
        "incident note customer called about in_tracefail, retry planned", user=RESPONDER)
    text = tbot.slash_text("trace in_tracefail", user=VIEWER)
    assert failed in text and "invoice.payment_failed" in text
    assert "timeline" in text and "customer called about in_tracefail, retry planned" in text
    assert text.index(failed) < text.index("customer called about in_tracefail")
