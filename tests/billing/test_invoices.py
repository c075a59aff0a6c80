"""`invoice <in_…>` and its actions end to end: signed slash commands and button clicks over real
HTTP, Stripe as a loopback stand-in in today's shapes (tests/support/fake_stripe.py: localstripe
has no send_invoice, no paid_out_of_band and no idempotent replay), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.billing.invoice_jobs import expire_due
from bot.billing.invoices import InvoiceActionRequest
from bot.billing.models import StripeCustomer, StripeInvoice
from bot.clock import FakeClock
from bot.incidents.models import TimelineEntry
from bot.models import AuditRecord
from bot.services import Services
from tests.support.fake_stripe import FakeStripe, invoice
from tests.support.harness import APPROVER, APPROVER2, CHANNEL, RESPONDER, VIEWER, Bot, flatten, make_settings

INV = "in_1FAILED"
SENT = "in_1SENDINV"


@pytest.fixture
def fake_stripe():
    server = FakeStripe().start()
    yield server
    server.stop()


@pytest.fixture
def clock():
    return FakeClock()


class InvoiceBot:
    def __init__(self, bot: Bot, stripe: FakeStripe, clock: FakeClock):
        self.bot, self.stripe, self.clock = bot, stripe, clock

    def answer(self, text: str, *, user: str, timeout: float = 20) -> str:
        url = self.bot.response_url()
        response = self.bot.slash(text, user=user, response_url=url)
        assert response.status_code == 200, response.text
        return flatten(self.bot.wait_response(url, timeout=timeout) or {})

    def answer_params(self, text: str, *, user: str) -> dict:
        url = self.bot.response_url()
        assert self.bot.slash(text, user=user, response_url=url).status_code == 200
        return self.bot.wait_response(url, timeout=20)

    def click(self, action: str, value: str, *, user: str) -> str:
        return flatten(self.bot.click_and_wait(f"revops:{action}", value, user=user, timeout=20) or {})

    def run(self, coro):
        return asyncio.run(coro)

    def rows(self, model, *where):
        async def go():
            async with self.bot.db() as db, db.transaction() as s:
                return list((await s.execute(select(model).where(*where))).scalars().all())
        return self.run(go())


async def seed(bot: Bot, clock: FakeClock) -> None:
    async with bot.db() as db, db.transaction() as s:
        s.add(StripeCustomer(id="cus_ADA", email="ada@example.com", name="Ada", version=0, updated_at=clock.now()))
        s.add(StripeInvoice(id=INV, customer_id="cus_ADA", status="open", currency="usd", amount_due=4900,
                            amount_paid=0, amount_remaining=4900, attempt_count=1, payment_failed=True,
                            version=0, updated_at=clock.now()))


@pytest.fixture
def ibot(tmp_path, db_url, fake_slack, fake_stripe, clock):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=fake_stripe.url,
                             extra_toml='[credits]\napproval_ttl = "30m"\n')
    bot = Bot(settings, fake_slack, clock=clock).start()
    fake_stripe.add(invoice(INV, "cus_ADA", error="Your card was declined."))
    fake_stripe.add(invoice(SENT, "cus_ADA", collection="send_invoice", due_days_ago=10, attempts=0))
    asyncio.run(seed(bot, clock))
    yield InvoiceBot(bot, fake_stripe, clock)
    bot.stop()


def buttons_of(params: dict) -> dict[str, dict]:
    return {e["action_id"]: e for b in params.get("blocks", []) if b["type"] == "actions" for e in b["elements"]}


def audits(ibot, command):
    return ibot.rows(AuditRecord, AuditRecord.command == command)


def test_the_invoice_is_shown_side_by_side_with_buttons_by_state(ibot):
    params = ibot.answer_params(f"invoice {INV}", user=VIEWER)
    text = flatten(params)
    for expected in (INV, "open", "49.00 USD · mirror: same", "Attempts", "1 · mirror: same",
                     f"pi_{INV[3:]}", "Your card was declined. (insufficient_funds)", "ada@example.com",
                     "Refunds", "Disputes"):
        assert expected in text, expected
    buttons = buttons_of(params)
    assert set(buttons) == {"revops:invoices.retry", "revops:invoices.mark_paid", "revops:invoices.void"}
    # resend only for send_invoice collection; the mirror has no row for it
    params = ibot.answer_params(f"invoice {SENT}", user=VIEWER)
    assert "revops:invoices.resend" in buttons_of(params)
    assert "mirror: —" in flatten(params)
    assert "Stripe has no invoice in_1NOPE" in ibot.answer("invoice in_1NOPE", user=VIEWER)
    assert "an invoice is named by its Stripe id" in ibot.answer("invoice cus_ADA", user=VIEWER)


def test_retry_succeeds_updates_the_mirror_sends_a_key_and_lands_on_the_timeline(ibot):
    assert "declared" in ibot.bot.slash_text("incident declare P2 checkout failing payments", user=RESPONDER)
    answer = ibot.click("invoices.retry", INV, user=RESPONDER)
    assert f"Payment retried for {INV}: paid, 49.00 USD paid." in answer
    [call] = ibot.stripe.posts("pay")
    assert call.idempotency_key == f"revops-pay-{INV}-1"  # the key names the attempt it retries
    [row] = ibot.rows(StripeInvoice, StripeInvoice.id == INV)
    assert (row.status, row.amount_paid, row.amount_remaining, row.attempt_count) == ("paid", 4900, 0, 2)
    [record] = audits(ibot, "invoices.retry")
    assert record.outcome == "ok" and record.subject == INV
    assert json.loads(json.dumps(record.args))["idempotency_key"] == f"revops-pay-{INV}-1"
    entries = ibot.rows(TimelineEntry)
    assert any("invoices.retry" in e.text and "Payment retried" in e.text for e in entries), [e.text for e in entries]
    # now paid: a second retry is refused before Stripe is called
    assert f"Cannot retry the payment for {INV}: it is paid." in ibot.answer(f"invoice retry {INV}", user=RESPONDER)
    assert len(ibot.stripe.posts("pay")) == 1


def test_a_declined_retry_is_answered_in_words_and_the_attempt_mirrored(ibot):
    ibot.stripe.declines.add(INV)
    answer = ibot.answer(f"invoice retry {INV}", user=RESPONDER)
    assert (f"Could not retry the payment for {INV}: Stripe declined the payment: Your card has insufficient "
            "funds (card_declined, insufficient_funds).") in answer
    [row] = ibot.rows(StripeInvoice, StripeInvoice.id == INV)
    assert (row.status, row.attempt_count) == ("open", 2)
    [record] = audits(ibot, "invoice retry")
    assert record.outcome == "refused" and "insufficient funds" in record.detail
    # the next retry is a new attempt, with a new key
    assert "Payment retried" in ibot.answer(f"invoice retry {INV}", user=RESPONDER)
    assert [c.idempotency_key for c in ibot.stripe.posts("pay")] == [f"revops-pay-{INV}-1", f"revops-pay-{INV}-2"]


def test_resend_only_for_send_invoice_and_viewers_cannot(ibot):
    answer = ibot.click("invoices.resend", SENT, user=RESPONDER)
    assert f"Invoice {SENT} sent to the customer again." in answer
    [call] = ibot.stripe.posts("send")
    assert call.idempotency_key and call.idempotency_key.startswith(f"revops-send-{SENT}-")
    refused = ibot.answer(f"invoice resend {INV}", user=RESPONDER)
    assert "Cannot resend the invoice" in refused and "charge_automatically" in refused
    assert "needs the responder role" in ibot.click("invoices.resend", SENT, user=VIEWER)
    assert len(ibot.stripe.posts("send")) == 1


def request_posted(ibot, action: str, invoice_id: str, user=RESPONDER) -> tuple[int, dict]:
    def is_approval(call):
        return "revops:invoices.approve" in buttons_of(call.params)

    before = len([c for c in ibot.bot.slack.calls_of("chat.postMessage") if is_approval(c)])
    answer = ibot.click(f"invoices.{action}", invoice_id, user=user)
    assert "posted for approval" in answer, answer
    approval = asyncio.run(ibot.bot.slack.wait("chat.postMessage", before + 1, where=is_approval))[before]
    rid = int(buttons_of(approval.params)["revops:invoices.approve"]["value"])
    assert f"Request #{rid} posted for approval" in answer
    return rid, approval.params


@pytest.mark.parametrize("action,status", [("mark_paid", "paid"), ("void", "void")])
def test_four_eyes_the_requester_cannot_approve_a_second_approver_can(ibot, action, status):
    rid, message = request_posted(ibot, action, INV, user=APPROVER)
    text = flatten(message)
    assert f"request #{rid}" in text and "<@U0APPROVER>" in text and "49.00 USD" in text and "12:30 UTC" in text
    assert ibot.stripe.posts() == []  # nothing at Stripe before approval
    own = ibot.click("invoices.approve", str(rid), user=APPROVER)
    assert "four eyes: a different approver must approve it" in own
    assert "needs the approver role" in ibot.click("invoices.approve", str(rid), user=RESPONDER)
    assert ibot.stripe.posts() == []
    done = ibot.click("invoices.approve", str(rid), user=APPROVER2)
    assert f"Approved request #{rid}: {INV} is now {status}." in done
    [call] = ibot.stripe.posts()
    assert call.idempotency_key == f"revops-invoice-action-{rid}"
    assert call.path.endswith("/pay" if action == "mark_paid" else "/void")
    if action == "mark_paid":
        assert call.params == {"paid_out_of_band": "true"}
    [row] = ibot.rows(StripeInvoice, StripeInvoice.id == INV)
    assert row.status == status
    [req] = ibot.rows(InvoiceActionRequest, InvoiceActionRequest.id == rid)
    assert (req.status, req.decided_by, req.requester) == ("approved", APPROVER2, APPROVER)
    records = audits(ibot, "invoices.approve")
    assert [r.outcome for r in records] == ["refused", "denied", "ok"]
    assert records[-1].args["approver"] == APPROVER2 and records[-1].args["requester"] == APPROVER
    # a second click decides nothing more
    again = ibot.click("invoices.approve", str(rid), user="U0ADMIN")
    assert "already approved by <@U0APPROVER2>" in again and len(ibot.stripe.posts()) == 1


def test_stripe_refusing_the_approved_action_is_said_and_recorded(ibot):
    rid, _ = request_posted(ibot, "void", INV)
    ibot.stripe.invoices[INV]["status"] = "paid"  # paid meanwhile, elsewhere
    answer = ibot.click("invoices.approve", str(rid), user=APPROVER)
    assert f"Stripe refused request #{rid}" in answer and "Invoice is already paid" in answer
    [req] = ibot.rows(InvoiceActionRequest, InvoiceActionRequest.id == rid)
    assert req.status == "failed" and "already paid" in req.decision_note


def test_reject_and_expiry(ibot):
    rid, _ = request_posted(ibot, "void", INV)
    assert f"Rejected request #{rid}." in ibot.click("invoices.reject", str(rid), user=APPROVER)
    assert "already rejected" in ibot.click("invoices.approve", str(rid), user=APPROVER2)
    rid2, _ = request_posted(ibot, "mark_paid", INV)
    rid3, _ = request_posted(ibot, "void", INV)
    ibot.clock.advance(timedelta(minutes=31))
    assert f"Request #{rid2} expired at 12:30 UTC; nothing was done." in ibot.click(
        "invoices.approve", str(rid2), user=APPROVER)

    async def sweep():
        async with ibot.bot.db() as db:
            return await expire_due(Services(settings=ibot.bot.settings, db=db, clock=ibot.clock, registry=None))

    assert ibot.run(sweep()) == 1  # the other was expired on click already
    statuses = {r.id: r.status for r in ibot.rows(InvoiceActionRequest)}
    assert statuses == {rid: "rejected", rid2: "expired", rid3: "expired"}
    assert [r.outcome for r in audits(ibot, "invoices.expire")] == ["expired"]
    assert ibot.stripe.posts() == []


def test_dry_run_changes_nothing_at_stripe(ibot):
    assert "on" in ibot.bot.slash_text("dryrun on", user="U0ADMIN").lower()
    answer = ibot.click("invoices.retry", INV, user=RESPONDER)
    assert "Dry run: would retry the payment" in answer and "Stripe was not called" in answer
    rid, _ = request_posted(ibot, "void", INV)
    assert "(dry run): Stripe was not called" in ibot.click("invoices.approve", str(rid), user=APPROVER)
    assert ibot.stripe.posts() == []
    [row] = ibot.rows(StripeInvoice, StripeInvoice.id == INV)
    assert row.status == "open"
    assert [r.outcome for r in audits(ibot, "invoices.retry")] == ["dry_run"]


def test_two_approvers_at_once_call_stripe_once(ibot):
    rid, _ = request_posted(ibot, "void", INV)
    answers: dict[str, str] = {}

    def approve(user):
        answers[user] = ibot.click("invoices.approve", str(rid), user=user)

    threads = [threading.Thread(target=approve, args=(u,)) for u in (APPROVER, APPROVER2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    won = [u for u, a in answers.items() if f"Approved request #{rid}" in a]
    lost = [u for u, a in answers.items() if "already approving" in a or "already approved" in a]
    assert len(won) == 1 and len(lost) == 1, answers
    assert len(ibot.stripe.posts("void")) == 1
    [req] = ibot.rows(InvoiceActionRequest, InvoiceActionRequest.id == rid)
    assert (req.status, req.decided_by) == ("approved", won[0])


def test_customer_shows_the_invoice_buttons_next_to_each_failed_invoice(ibot):
    params = ibot.answer_params("customer cus_ADA", user=VIEWER)
    buttons = buttons_of(params)
    labels = {e["text"]["text"]: (action_id, e["value"]) for action_id, e in buttons.items()}
    assert labels["Retry payment (in_1FAILED)"][1] == INV
    assert any(label.startswith("Void (in_1FAILED)") for label in labels)
    assert not any("in_1SENDINV" in label for label in labels)  # open but never failed: no buttons here
    assert len(buttons) == len({e["action_id"] for e in buttons.values()})  # unique action ids
    action_id, value = labels["Retry payment (in_1FAILED)"]
    answer = flatten(ibot.bot.click_and_wait(action_id, value, user=RESPONDER, timeout=20) or {})
    assert "paid" in answer.lower(), answer
    assert [c.path for c in ibot.stripe.posts("pay")] == [f"/v1/invoices/{INV}/pay"]
