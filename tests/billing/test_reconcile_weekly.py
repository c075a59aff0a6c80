"""`reconcile --weekly` (issue 18 item 2): credits spent per account this week against the week
before (top 10, usage jumps over `[reconcile] usage_jump`), paid revenue per day mirror against
Stripe with a **Sync** button per differing day (approver; dry-run, audit), and the weekly post at
`[reconcile] weekly` on the test clock. Through signed Slack requests against the small Stripe
stand-in (localstripe's invoice listing has no `status` or `created` filter), on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from bot.app import build_services
from bot.billing import ledger
from bot.billing.mirror import upsert_invoice
from bot.billing.models import StripeInvoice
from bot.clock import FakeClock
from bot.errors import SettingsError
from bot.models import AuditRecord, OutgoingMessage, ScheduledJob
from bot.settings import load_file_config
from tests.support.fake_stripe import FakeStripe
from tests.support.harness import ADMIN, APPROVER, CHANNEL, RESPONDER, VIEWER, Bot, flatten, make_settings

from .conftest import StripeBot

UTC = timezone.utc
NOW = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)  # a Monday, an hour before the weekly post
THIS_WEEK = NOW - timedelta(days=2)
LAST_WEEK = NOW - timedelta(days=9)
# account: (credits spent this week, the week before)
USAGE = {"acct_big": (500, 400), "acct_jump": (400, 100), "acct_new": (50, 0), "acct_flat": (0, 200),
         **{f"acct_s0{n}": (10 * n, 0) for n in range(1, 10)}}


def paid_invoice(iid: str, cid: str, amount: int, created: datetime, status: str = "paid") -> dict:
    return {"id": iid, "object": "invoice", "customer": cid, "status": status, "currency": "usd",
            "amount_due": amount, "amount_paid": amount if status == "paid" else 0,
            "amount_remaining": 0 if status == "paid" else amount, "attempt_count": 1, "attempted": True,
            "next_payment_attempt": None, "created": int(created.timestamp()), "collection_method": "charge_automatically",
            "due_date": None, "billing_reason": "subscription_cycle", "livemode": False, "parent": None,
            "status_transitions": {"paid_at": int(created.timestamp()) + 60 if status == "paid" else None},
            "lines": {"object": "list", "data": [], "has_more": False, "url": f"/v1/invoices/{iid}/lines"}}


JAN8 = datetime(2026, 1, 8, 10, 0, tzinfo=UTC)
JAN10 = datetime(2026, 1, 10, 15, 0, tzinfo=UTC)
STRIPE_INVOICES = [
    paid_invoice("in_A", "cus_ada", 4900, JAN8),    # in both
    paid_invoice("in_B", "cus_bob", 2000, JAN10),   # Stripe only: the mirror never got it
    paid_invoice("in_C", "cus_ada", 1000, JAN10),   # in both
    paid_invoice("in_D", "cus_bob", 7000, JAN10 + timedelta(hours=1), status="open"),  # not paid: not revenue
]


async def seed(bot: Bot) -> None:
    async with bot.db() as db, db.transaction() as s:
        for account, (this_week, last_week) in USAGE.items():
            await ledger.ensure_account(s, account, at=LAST_WEEK - timedelta(days=1))
            await ledger.append_entry(s, account_id=account, delta=1000, kind="purchase", reason="pack",
                                      actor="stripe", idempotency_key=f"buy:{account}", at=LAST_WEEK - timedelta(days=1))
            for n, (spent, at) in enumerate(((last_week, LAST_WEEK), (this_week, THIS_WEEK))):
                if spent:
                    await ledger.append_entry(s, account_id=account, delta=-spent, kind="claim", reason="usage",
                                              actor="app", idempotency_key=f"use:{account}:{n}", at=at)
        # a grant is not use, nor is use older than two weeks
        await ledger.append_entry(s, account_id="acct_flat", delta=-100, kind="claim", reason="old usage",
                                  actor="app", idempotency_key="use:old", at=NOW - timedelta(days=20))
        for inv in (STRIPE_INVOICES[0], STRIPE_INVOICES[2]):
            await upsert_invoice(s, inv, version=1, at=NOW - timedelta(days=1))


@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def fake_stripe():
    server = FakeStripe().start()
    for inv in STRIPE_INVOICES:
        server.add(inv)
    yield server
    server.stop()


@pytest.fixture
def wbot(tmp_path, db_url, fake_slack, fake_stripe, clock):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=fake_stripe.url)
    bot = Bot(settings, fake_slack, clock=clock).start()
    asyncio.run(seed(bot))
    yield StripeBot(bot, None)
    bot.stop()


def weekly(wbot, user=RESPONDER) -> tuple[str, dict]:
    ack, answer = wbot.ask("reconcile --weekly", user=user)
    return flatten(answer), answer


def sync_buttons(answer: dict) -> list[dict]:
    return [e for b in answer.get("blocks", []) if b["type"] == "actions" for e in b["elements"]
            if e["action_id"].split("~")[0] == "revops:reconcile.sync_day"]


def mirror_ids(wbot) -> set[str]:
    return {inv.id for inv in wbot.rows(StripeInvoice)}


def test_week_over_week_usage_with_a_jump_and_the_revenue_per_day(wbot):
    text, answer = weekly(wbot)
    assert "Weekly reconciliation: paid revenue differs on 1 day (Stripe / mirror)." in text
    this_week = sum(u[0] for u in USAGE.values())
    last_week = sum(u[1] for u in USAGE.values())
    assert f"Credits spent: {this_week:,} this week, {last_week:,} the week before (12 accounts this week" in text
    assert "Top 10 this week:" in text
    assert "1. acct_big — 500 credits (last week 400, ×1.2)" in text
    assert "2. acct_jump — 400 credits (last week 100, ×4.0)" in text
    assert "acct_new — 50 credits (none last week)" in text
    assert "acct_s02" not in text and "acct_s01" not in text  # the 11th and 12th
    assert "acct_flat" not in text  # spent nothing this week
    jumps = text.split("Usage jumps (more than 3× last week):", 1)[1].split("Paid revenue per day", 1)[0]
    assert "1. acct_jump — 400 credits (last week 100, ×4.0)" in jumps and "acct_big" not in jumps
    assert "Paid revenue per day (Stripe / mirror, by invoice date, UTC, since 2025-12-30):" in text
    assert "2026-01-08: 49.00 USD / 49.00 USD\n" in text + "\n"
    assert "2026-01-10: 30.00 USD / 10.00 USD  ← differs by 20.00 USD (2 / 1 invoices)" in text
    assert "70.00" not in text  # the open invoice is not revenue
    [button] = sync_buttons(answer)
    assert button["value"] == "2026-01-10" and button["text"]["text"] == "Sync 2026-01-10"


def test_sync_fixes_the_day_for_an_approver_only_and_respects_dry_run(wbot, fake_stripe):
    text, answer = weekly(wbot)
    [button] = sync_buttons(answer)
    assert "in_B" not in mirror_ids(wbot)

    denied = wbot.click("reconcile.sync_day", button["value"], user=RESPONDER)
    assert "needs the approver role" in denied and "in_B" not in mirror_ids(wbot)

    assert "Dry-run is now on" in wbot.slash_text("dryrun on", user=ADMIN)
    simulated = wbot.click("reconcile.sync_day", button["value"], user=APPROVER)
    assert "dry run" in simulated.lower() and "in_B" not in mirror_ids(wbot)
    assert "Dry-run is now off" in wbot.slash_text("dryrun off", user=ADMIN)

    done = wbot.click("reconcile.sync_day", button["value"], user=APPROVER)
    assert "Synced the invoices of 2026-01-10 from Stripe: 1 changed, 1 already matched." in done
    assert "in_D" not in mirror_ids(wbot)  # open that day, and not paid in the mirror: left out
    [synced] = wbot.rows(StripeInvoice, StripeInvoice.id == "in_B")
    assert (synced.status, synced.amount_paid) == ("paid", 2000)
    listed = [c.params for c in fake_stripe.calls if c.method == "GET" and c.path == "/v1/invoices"]
    assert listed[-1]["created[gte]"] == str(int(datetime(2026, 1, 10, tzinfo=UTC).timestamp()))
    assert any(params.get("status") == "paid" for params in listed)  # the report asked for paid ones

    text, answer = weekly(wbot)
    assert "2026-01-10: 30.00 USD / 30.00 USD" in text and "differs" not in text
    assert "Stripe and the mirror agree on paid revenue" not in text  # the usage jump still warns
    assert "1 account used over 3× last week's credits" in text
    assert sync_buttons(answer) == []

    audited = [r for r in wbot.rows(AuditRecord) if r.command == "reconcile.sync_day"]
    assert [(r.actor, r.outcome) for r in audited][-1][0] == APPROVER
    assert len(audited) >= 2  # the refusal, the dry run and the sync are each recorded


def test_a_viewer_is_refused_and_bad_arguments_get_the_usage_line(wbot):
    assert "needs the responder role" in wbot.answer_text("reconcile --weekly", user=VIEWER)
    text = wbot.answer_text("reconcile --weekly extra", user=RESPONDER)
    assert "unexpected argument extra" in text and "reconcile --weekly" in text
    text = wbot.answer_text("reconcile --weekly --days 3", user=RESPONDER)
    assert "unknown option --days" in text and "reconcile --weekly" in text
    assert "this button is malformed" in wbot.click("reconcile.sync_day", "last tuesday", user=APPROVER)
    assert "reconcile --weekly" in wbot.answer_text("help reconcile", user=VIEWER)


async def test_the_weekly_post_fires_at_the_configured_time(wbot, clock):
    services = build_services(wbot.settings, clock)
    try:
        ran = await services.scheduler.drain(services)
        assert "global:weekly_reconcile" not in ran
        async with services.db.transaction() as s:
            [job] = (await s.execute(select(ScheduledJob).where(ScheduledJob.key == "global:weekly_reconcile"))).scalars()
            assert job.due_at == datetime(2026, 1, 12, 9, 0, tzinfo=UTC)

        clock.set(datetime(2026, 1, 12, 8, 59, 59, tzinfo=UTC))
        assert "global:weekly_reconcile" not in await services.scheduler.drain(services)
        clock.set(datetime(2026, 1, 12, 9, 0, tzinfo=UTC))
        assert "global:weekly_reconcile" in await services.scheduler.drain(services)
        await wbot.drain()
        posts = [c for c in wbot.slack.calls_of("chat.postMessage") if c.params.get("channel") == CHANNEL]
        [post] = [flatten(c.params) for c in posts if "Weekly reconcile — " in flatten(c.params)]
        assert "2026-01-10: 30.00 USD / 10.00 USD  ← differs by 20.00 USD" in post
        assert "revops:reconcile.sync_day" in post and "2026-01-10" in post

        clock.advance(timedelta(minutes=1))
        assert "global:weekly_reconcile" not in await services.scheduler.drain(services)
        async with services.db.transaction() as s:
            [job] = (await s.execute(select(ScheduledJob).where(ScheduledJob.key == "global:weekly_reconcile"))).scalars()
            assert job.due_at == datetime(2026, 1, 19, 9, 0, tzinfo=UTC) and job.runs == 1
            queued = (await s.execute(select(OutgoingMessage).where(OutgoingMessage.channel == CHANNEL))).scalars().all()
        assert sum(1 for m in queued if "Weekly reconcile" in str(m.reply)) == 1
    finally:
        await services.db.dispose()
        await services.stripe.aclose()


def test_the_weekly_setting_is_checked_and_can_be_off(tmp_path):
    def load(text):
        path = tmp_path / "revops.toml"
        path.write_text(text)
        return load_file_config(path)

    assert str(load('[reconcile]\nweekly = "fri 17:30"\n').reconcile.weekly) == "fri 17:30"
    assert load('[reconcile]\nweekly = "off"\n').reconcile.weekly is None
    assert load('[reconcile]\nweekly = false\n').reconcile.weekly is None
    assert str(load("").reconcile.weekly) == "mon 09:00" and load("").reconcile.usage_jump == 3
    for bad in ('"monday 9am"', '"mon 24:00"', '"mon 9:00"', "3"):
        with pytest.raises(SettingsError) as caught:
            load(f"[reconcile]\nweekly = {bad}\n")
        assert str(caught.value).startswith('revops.toml: reconcile.weekly: expected "ddd HH:MM" in UTC such as "mon 09:00"')
    with pytest.raises(SettingsError, match=r"reconcile.usage_jump: Input should be greater than 1"):
        load("[reconcile]\nusage_jump = 1\n")


async def test_weekly_off_stops_the_post(wbot, tmp_path, db_url, fake_slack, clock):
    on = build_services(wbot.settings, clock)
    (tmp_path / "off").mkdir()
    off_settings = make_settings(tmp_path / "off", db_url, fake_slack.api_url, extra_toml='[reconcile]\nweekly = "off"\n',
                                 stripe_api_base=wbot.settings.env.stripe_api_base)
    off = build_services(off_settings, clock)
    try:
        await on.scheduler.drain(on)
        clock.set(datetime(2026, 1, 12, 9, 30, tzinfo=UTC))
        assert "global:weekly_reconcile" not in await off.scheduler.drain(off)  # stopped before it ran
        async with off.db.transaction() as s:
            [job] = (await s.execute(select(ScheduledJob).where(ScheduledJob.key == "global:weekly_reconcile"))).scalars()
            assert job.status == "done" and job.runs == 0
    finally:
        for services in (on, off):
            await services.db.dispose()
            await services.stripe.aclose()
