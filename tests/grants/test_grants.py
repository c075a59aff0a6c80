"""Credit grants with four-eyes button approval, through signed Slack requests over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.app import build_services
from bot.billing import ledger
from bot.billing.models import LedgerEntry
from bot.clock import FakeClock
from bot.grants.models import GrantRequest
from bot.grants.jobs import expire_due
from bot.models import AuditRecord
from bot.outbox import Deliverer
from bot.services import Services
from bot.worker import Worker
from tests.support.harness import (ADMIN, APPROVER, APPROVER2, CHANNEL, RESPONDER, VIEWER, Bot, flatten,
                                   make_settings, shown)

CREDITS_TOML = """
[credits]
max_grant = 500
daily_cap = 1000
approval_ttl = "30m"
"""


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def gbot(tmp_path, db_url, fake_slack, clock):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=CREDITS_TOML)
    running = Bot(settings, fake_slack, clock=clock).start()
    asyncio.run(seed(running, clock))
    yield running
    running.stop()


async def seed(bot, clock):
    async with bot.db() as db, db.transaction() as s:
        await ledger.ensure_account(s, "acct_1", stripe_customer_id="cus_ONE", email="ada@example.com", at=clock.now())
        await ledger.append_entry(s, account_id="acct_1", delta=100, kind="purchase", reason="seed pack",
                                  actor="stripe", idempotency_key="seed:acct_1", at=clock.now() - timedelta(days=2))
        await ledger.ensure_account(s, "acct_2", email="bob@example.com", at=clock.now())


async def entries(bot, account="acct_1", kind=None):
    async with bot.db() as db, db.transaction() as s:
        q = select(LedgerEntry).where(LedgerEntry.account_id == account).order_by(LedgerEntry.id)
        if kind:
            q = q.where(LedgerEntry.kind == kind)
        return (await s.execute(q)).scalars().all()


async def balance(bot, account="acct_1"):
    async with bot.db() as db, db.transaction() as s:
        return await ledger.balance(s, account)


async def audit_rows(bot, command):
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(AuditRecord).where(AuditRecord.command == command)
                                .order_by(AuditRecord.id))).scalars().all()


async def request_posted(bot, text, user=RESPONDER):
    """Ask for a grant; return (request id, the posted approval message's params, its buttons)."""
    def buttons_of(call):
        return {e["action_id"]: e for b in call.params.get("blocks", []) if b["type"] == "actions"
                for e in b["elements"]}

    def is_approval(call):
        return call.params.get("channel") == CHANNEL and "revops:grants.approve" in buttons_of(call)

    before = len([c for c in bot.slack.calls_of("chat.postMessage") if is_approval(c)])
    answer = bot.slash_text(text, user=user)
    assert "posted for approval" in answer, answer
    approval = (await bot.slack.wait("chat.postMessage", before + 1, where=is_approval))[before]
    buttons = buttons_of(approval)
    rid = int(buttons["revops:grants.approve"]["value"])
    assert f"Request #{rid} posted for approval" in answer
    return rid, approval.params, buttons


async def wait_updates(bot, count, timeout=10):
    return await bot.slack.wait("chat.update", count, timeout)


async def test_the_approval_message_names_everything(gbot):
    rid, message, buttons = await request_posted(gbot, "grant ada@example.com 50 refund for the outage")
    text = flatten(message)
    for expected in (f"request #{rid}", "<@U0RESPONDER>", "acct_1", "50 credits", "refund for the outage",
                     "100 credits", "Expires", "12:30 UTC"):
        assert expected in text, expected
    assert buttons["revops:grants.approve"]["style"] == "primary" and "confirm" in buttons["revops:grants.approve"]
    assert buttons["revops:grants.reject"]["style"] == "danger"
    assert await entries(gbot, kind="grant") == []  # nothing moves before approval


async def test_approve_moves_credits_once_updates_the_message_and_tells_the_requester(gbot, fake_slack):
    rid, message, _ = await request_posted(gbot, "grant cus_ONE 50 refund for the outage")
    answer = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    assert f"Approved request #{rid}" in flatten(answer) and "New balance: 150" in flatten(answer)
    assert await balance(gbot) == 150
    [entry] = await entries(gbot, kind="grant")
    assert entry.delta == 50 and entry.actor == APPROVER and entry.idempotency_key == f"grant-request:{rid}"
    updates = await wait_updates(gbot, 1)
    approval_ts = next(c.ts for c in fake_slack.calls_of("chat.postMessage") if c.params is message)
    assert (updates[0].params["channel"], updates[0].params["ts"]) == (CHANNEL, approval_ts)  # in place
    updated = flatten(updates[0].params)
    assert "approved by <@U0APPROVER>" in updated and "New balance: 150 credits" in updated
    assert "revops:grants.approve" not in json.dumps(updates[0].params)  # buttons gone
    await gbot.wait_posts(2)
    dm = [c for c in fake_slack.calls_of("chat.postMessage") if c.params["channel"] == RESPONDER]
    assert dm and "was approved by <@U0APPROVER>" in dm[0].params["text"]

    # A second click, by anyone, grants nothing more and says who decided and when.
    again = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER2)
    assert "already approved by <@U0APPROVER> at 2026-01-05 12:00:00 UTC" in flatten(again)
    assert await balance(gbot) == 150 and len(await entries(gbot, kind="grant")) == 1


async def test_the_requester_cannot_approve_their_own_request(gbot, tmp_path):
    rid, _, _ = await request_posted(gbot, "grant acct_1 20 goodwill", user=APPROVER)
    answer = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    assert "four eyes: a different approver must approve it" in flatten(answer)
    assert await balance(gbot) == 100
    [row] = await audit_rows(gbot, "grants.approve")
    assert row.outcome == "refused" and row.actor == APPROVER


@pytest.mark.parametrize("user,role", [(RESPONDER, "responder"), (VIEWER, "viewer")])
async def test_only_approvers_can_approve(gbot, user, role):
    rid, _, _ = await request_posted(gbot, "grant acct_1 20 goodwill")
    answer = gbot.click_and_wait("revops:grants.approve", str(rid), user=user)
    assert f"needs the approver role; you are {role}" in flatten(answer)
    assert await balance(gbot) == 100
    assert (await audit_rows(gbot, "grants.approve"))[-1].outcome == "denied"


def test_viewers_cannot_request(gbot):
    assert "needs the responder role; you are viewer" in gbot.slash_text("grant acct_1 20 goodwill", user=VIEWER)


async def test_twenty_concurrent_approvals_make_one_ledger_entry(gbot):
    rid, _, _ = await request_posted(gbot, "grant acct_1 75 outage credit")
    results = []

    def click(user):
        response, url = gbot.click("revops:grants.approve", str(rid), user=user)
        results.append((response.status_code, url))

    threads = [threading.Thread(target=click, args=(APPROVER if i % 2 else APPROVER2,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(code == 200 for code, _ in results)
    answers = [flatten(gbot.wait_response(url, timeout=30)) for _, url in results]
    assert sum("Approved request" in a for a in answers) == 1
    assert sum("already approved" in a for a in answers) == 19
    assert [e.delta for e in await entries(gbot, kind="grant")] == [75]
    assert await balance(gbot) == 175
    outcomes = [r.outcome for r in await audit_rows(gbot, "grants.approve")]
    assert outcomes.count("ok") == 1 and outcomes.count("refused") == 19


async def test_reject_then_approve_grants_nothing(gbot, fake_slack):
    rid, _, _ = await request_posted(gbot, "grant acct_1 40 duplicate charge")
    assert f"Rejected request #{rid}" in gbot.slash_text(f"grant reject #{rid} not our bug", user=APPROVER2)
    answer = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    assert "already rejected by <@U0APPROVER2>" in flatten(answer)
    assert await entries(gbot, kind="grant") == []
    updates = await wait_updates(gbot, 1)
    assert "rejected by <@U0APPROVER2>" in flatten(updates[0].params) and "not our bug" in flatten(updates[0].params)


async def test_the_requester_may_cancel_but_nobody_else(gbot):
    rid, _, _ = await request_posted(gbot, "grant acct_1 40 typo")
    other = gbot.click_and_wait("revops:grants.cancel", str(rid), user="U0RESPONDER2")
    assert "Only <@U0RESPONDER>, who asked, can cancel" in flatten(other)
    mine = gbot.click_and_wait("revops:grants.cancel", str(rid), user=RESPONDER)
    assert f"Cancelled request #{rid}" in flatten(mine)
    late = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    assert "already cancelled" in flatten(late)
    assert await balance(gbot) == 100


async def test_expired_requests_cannot_be_approved_and_the_sweep_updates_messages(gbot, clock):
    rid, _, _ = await request_posted(gbot, "grant acct_1 30 late one")
    rid2, _, _ = await request_posted(gbot, "grant acct_2 30 later one")
    clock.advance(timedelta(minutes=31))
    answer = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    assert f"Request #{rid} expired at 12:30 UTC; nothing was granted" in flatten(answer)
    assert await balance(gbot) == 100
    async with gbot.db() as db:  # the worker's sweep, as another process would run it
        services = Services(settings=gbot.settings, db=db, clock=clock, registry=None)
        swept = await expire_due(services)
    assert swept == 1  # the first was expired on click already
    updates = await wait_updates(gbot, 2)
    assert all("expired" in flatten(u.params) for u in updates)
    async with gbot.db() as db, db.transaction() as s:
        statuses = (await s.execute(select(GrantRequest.status).order_by(GrantRequest.id))).scalars().all()
    assert statuses == ["expired", "expired"]
    assert [r.outcome for r in await audit_rows(gbot, "grants.expire")] == ["expired"]


async def test_the_daily_cap_counts_granted_and_pending(gbot, clock):
    rid, _, _ = await request_posted(gbot, "grant acct_1 500 big outage")
    gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    await request_posted(gbot, "grant acct_1 400 still broken")
    refused = gbot.slash_text("grant acct_1 101 one more", user=RESPONDER)
    assert "daily cap: acct_1 has 500 credits granted and 400 pending today" in refused
    assert "exceed the cap of 1000 (at most 100 more today)" in refused
    assert "posted for approval" in gbot.slash_text("grant acct_1 100 last one", user=RESPONDER)
    clock.advance(timedelta(days=1))
    assert "posted for approval" in gbot.slash_text("grant acct_1 500 next day", user=RESPONDER)


@pytest.mark.parametrize("text,message", [
    ("grant acct_1 0 nothing", "amount must be a whole number from 1 to 500 credits; got 0"),
    ("grant acct_1 501 too much", "amount must be a whole number from 1 to 500 credits; got 501"),
    ("grant acct_1 -5 negative", "<amount> must be a whole number, got -5"),
    ("grant acct_1 12.5 fractional", "<amount> must be a whole number, got 12.5"),
    ("grant nobody@example.com 5 who", "no account matches nobody@example.com"),
    ("credits adjust acct_1 50 no sign", "<amount> must be a signed whole number such as +50 or -20"),
    ("credits adjust acct_1 -101 too far", "would take acct_1 below zero: the balance is 100 credits and the change is -101"),
    ("grant reject twelve", "a request is named by its number, such as #12"),
    ("grant approve #999", "there is no grant request #999"),
])
async def test_bad_requests_are_refused_privately_and_post_nothing(gbot, fake_slack, text, message):
    # (`grant` and `grant acct_1 50`, arguments missing, open the form in Slack: tests/test_modals.py)
    response = gbot.slash(text, user=APPROVER)
    assert response.json()["response_type"] == "ephemeral"
    answer = flatten(response.json())
    assert message in shown(answer)  # as a person reads it (the renderer escapes "<amount>")
    if "Usage" not in answer:
        assert "no grant request" in answer
    await gbot.drain()
    assert fake_slack.calls_of("chat.postMessage") == []
    assert await balance(gbot) == 100


async def test_negative_adjustment_refused_again_at_approval_time(gbot):
    rid, _, _ = await request_posted(gbot, "credits adjust acct_1 -80 double credited")
    claim, _, _ = await request_posted(gbot, "credits adjust acct_1 -50 another correction")
    assert "Approved" in flatten(gbot.click_and_wait("revops:grants.approve", str(claim), user=APPROVER))
    assert await balance(gbot) == 50
    answer = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    assert "below zero: the balance is 50 credits and the change is -80" in flatten(answer)
    assert await balance(gbot) == 50
    async with gbot.db() as db, db.transaction() as s:
        assert (await s.get(GrantRequest, rid)).status == "pending"  # the refused decision changed nothing


async def test_positive_adjustment_goes_through_the_same_approval(gbot):
    rid, message, _ = await request_posted(gbot, "credits adjust bob@example.com +25 missed purchase")
    assert "Credit adjustment request" in flatten(message) and "+25 credits" in flatten(message)
    gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    [entry] = await entries(gbot, account="acct_2")
    assert entry.kind == "adjustment" and entry.delta == 25


async def test_dry_run_runs_the_whole_flow_and_moves_nothing(gbot, fake_slack):
    gbot.slash_text("dryrun on", user=ADMIN)
    answer = gbot.slash_text("grant acct_1 60 rehearsal", user=RESPONDER)
    assert "[DRY RUN]" in answer and "posted for approval" in answer
    posts = await gbot.wait_posts(2)
    approval = next(c for c in posts if c.params["channel"] == CHANNEL and "request #" in c.params["text"])
    assert "[DRY RUN]" in approval.params["text"]
    rid = int(next(e["value"] for b in approval.params["blocks"] if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"] == "revops:grants.approve"))
    answer = flatten(gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER))
    assert "[DRY RUN]" in answer and "Nothing moved (dry run)" in answer
    assert await entries(gbot, kind="grant") == [] and await balance(gbot) == 100
    updates = await wait_updates(gbot, 1)
    assert "[DRY RUN]" in updates[0].params["text"]
    assert (await audit_rows(gbot, "grants.approve"))[-1].outcome == "dry_run"
    # Turning dry-run off does not make a rehearsal real.
    gbot.slash_text("dryrun off", user=ADMIN)
    assert "already approved" in flatten(gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER2))
    assert await balance(gbot) == 100


@pytest.mark.parametrize("status", [429, 500])
async def test_slack_failing_chat_update_keeps_the_decision_and_retries(gbot, fake_slack, status):
    rid, _, _ = await request_posted(gbot, "grant acct_1 10 flaky slack")
    fake_slack.fail("chat.update", status=status, retry_after=1, times=2 if status == 429 else 3)
    answer = gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    assert "Approved" in flatten(answer)
    assert await balance(gbot) == 110
    # The outbox keeps trying until Slack takes the update. The Web API client waits out the two
    # 429s itself (Retry-After) and delivers on the third call; it retries a 500 twice, then the
    # outbox backs off and the fourth call, once the back-off has passed, gets through.
    await gbot.drain(timeout=20)
    if status == 500:
        assert len(fake_slack.calls_of("chat.update")) == 3 and not await _sent(gbot)
        gbot.runtime.services.clock.advance(5)  # past the outbox's back-off
        await gbot.drain(timeout=20)
    assert await _sent(gbot), "the update never got through"
    assert len(fake_slack.calls_of("chat.update")) == (3 if status == 429 else 4)
    assert len(await entries(gbot, kind="grant")) == 1 and await balance(gbot) == 110


async def _sent(bot) -> bool:
    from bot.models import OutgoingMessage

    async with bot.db() as db, db.transaction() as s:
        rows = (await s.execute(select(OutgoingMessage).where(OutgoingMessage.kind == "update"))).scalars().all()
    return bool(rows) and all(r.status == "sent" for r in rows)


async def test_the_audit_trail_names_requester_approver_amount_reason_and_outcome(gbot):
    rid, _, _ = await request_posted(gbot, "grant acct_1 45 billing bug 123")
    gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    [asked] = await audit_rows(gbot, "grant")
    assert asked.actor == RESPONDER and asked.outcome == "ok" and asked.subject == "acct_1"
    assert asked.args["amount"] == 45 and asked.args["reason"] == "billing bug 123"
    [decided] = await audit_rows(gbot, "grants.approve")
    assert decided.actor == APPROVER and decided.outcome == "ok" and decided.subject == "acct_1"
    assert decided.args["requester"] == RESPONDER and decided.args["approver"] == APPROVER
    assert decided.args["amount"] == 45 and decided.args["reason"] == "billing bug 123"
    assert decided.args["balance_after"] == 145
    assert "audit chain verifies" in gbot.slash_text("audit acct_1", user=APPROVER)


async def test_a_grant_in_an_open_incidents_channel_lands_on_its_timeline(gbot):
    assert "declared" in gbot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER)
    rid, _, _ = await request_posted(gbot, "grant acct_1 35 credits for the failed invoices")
    gbot.click_and_wait("revops:grants.approve", str(rid), user=APPROVER)
    timeline = gbot.slash_text("incident timeline", user=VIEWER)
    # (how the timeline shows who acted is the incidents family's: tests/incidents/test_timeline_capture.py)
    assert re.search(r"U0RESPONDER\S*  grant acct_1 35 credits for the failed invoices", timeline), timeline
    assert f"Request #{rid} posted for approval" in timeline
    assert re.search(r"U0APPROVER\S*  clicked grants.approve", timeline), timeline
    assert f"Approved request #{rid}" in timeline


async def test_the_worker_runs_the_expiry_sweep(gbot, clock, fake_slack):
    rid, _, _ = await request_posted(gbot, "grant acct_1 30 nobody looks")
    clock.advance(timedelta(minutes=31))
    async with gbot.db() as db:
        worker = Worker(build_services(gbot.settings, clock, db), Deliverer(db, clock, None))
        assert worker.scheduler.kinds["grant_expiry"].global_job  # the scheduler's job, as any worker runs it
        await worker.drain()
        async with db.transaction() as s:
            assert (await s.get(GrantRequest, rid)).status == "expired"
    updates = await wait_updates(gbot, 1)
    assert "expired" in flatten(updates[0].params)
