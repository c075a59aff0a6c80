"""The App Home tab (issue 19 item 2): signed `app_home_opened` events through the real bolt
signature check → views.publish of that person's home, with only what their role may see; and
the homes published again when their data changes (a decision, an expiry, a flag), once per burst."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from bot import app
from bot.billing import ledger
from bot.billing.invoices import InvoiceActionRequest
from bot.billing.models import StripeEvent
from bot.clock import FakeClock
from bot.family import HomeSection
from bot.grants.jobs import expire_due
from bot.grants.models import GrantRequest
from bot.incidents.models import TimelineEntry
from bot.reply import Button, Reply
from bot.slack.home import DEBOUNCE, HomeViewer
from tests.support.harness import ADMIN, APPROVER, APPROVER2, CHANNEL, RESPONDER, VIEWER, Bot, flatten, make_settings

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
def hbot(tmp_path, db_url, fake_slack, clock):
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


def open_home(bot, user: str):
    response = bot.event({"type": "app_home_opened", "user": user, "channel": f"D{user}", "tab": "home",
                          "event_ts": f"{time.time():.6f}"})
    assert response.status_code == 200, response.text


async def home_published(bot, user: str, count: int = 1, where=None) -> dict:
    """The `count`-th views.publish for `user` (that `where` keeps), as its view."""
    def mine(call):
        return call.params.get("user_id") == user and (where is None or where(view_of(call)))

    calls = await bot.slack.wait("views.publish", count, where=mine)
    return view_of(calls[count - 1])


def view_of(call) -> dict:
    view = call.params["view"]
    return json.loads(view) if isinstance(view, str) else view


def buttons(view: dict) -> dict[str, list[str]]:
    """action id (without a "~N" copy suffix) -> the values of its buttons."""
    found: dict[str, list[str]] = {}
    for block in view["blocks"]:
        if block["type"] == "actions":
            for element in block["elements"]:
                found.setdefault(element["action_id"].split("~")[0], []).append(element["value"])
    return found


async def pending_request_id(bot) -> int:
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(GrantRequest.id).where(GrantRequest.status == "pending"))).scalar_one()


def home_click_body(action_id: str, value: str, *, user: str) -> str:
    """A button clicked on the Home tab, as Slack sends it: a view container, no channel, no response_url."""
    payload = {
        "type": "block_actions",
        "team": {"id": "T0TEST", "domain": "revops-test"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEST"},
        "api_app_id": "A0REVOPS",
        "token": "legacy-verification-token-unused",
        "container": {"type": "view", "view_id": f"V{user}"},
        "trigger_id": uuid.uuid4().hex,
        "view": {"id": f"V{user}", "type": "home", "blocks": []},
        "actions": [{"action_id": action_id, "block_id": "b1", "value": value, "type": "button",
                     "action_ts": f"{time.time():.6f}", "text": {"type": "plain_text", "text": "Approve"}}],
    }
    return urlencode({"payload": json.dumps(payload)})


async def test_the_home_shows_each_person_what_waits_for_them(hbot, fake_slack):
    assert "Incident #1" in hbot.slash_text("incident declare P1 checkout card payments failing", user=RESPONDER)
    assert "posted for approval" in hbot.slash_text("grant ada@example.com 50 refund for the outage", user=RESPONDER)
    rid = await pending_request_id(hbot)
    assert "Dry-run is now on" in hbot.slash_text("dryrun on", user=ADMIN)
    await hbot.drain()

    open_home(hbot, APPROVER)
    view = await home_published(hbot, APPROVER)
    text = flatten(view)
    assert view["type"] == "home"
    assert "you are approver" in text
    assert "Dry-run is on" in text and "Panic\noff" in text
    assert "#1 [P1] checkout: card payments failing" in text and "Commander\nnobody yet" in text
    assert "left of 15m" in text and "no update yet" in text  # the acknowledgement clock, the update cadence
    assert "Credit requests waiting: 1" in text and "refund for the outage" in text and "@U0RESPONDER" in text
    assert "Failed Stripe events, last 24 hours: 0" in text
    assert buttons(view)["revops:grants.approve"] == [str(rid)] and buttons(view)["revops:grants.reject"] == [str(rid)]

    # The requester sees the request, without Approve / Reject (four eyes), with Cancel.
    open_home(hbot, RESPONDER)
    mine = await home_published(hbot, RESPONDER)
    assert "refund for the outage" in flatten(mine) and "you are responder" in flatten(mine)
    assert "revops:grants.approve" not in buttons(mine) and "revops:grants.reject" not in buttons(mine)
    assert buttons(mine)["revops:grants.cancel"] == [str(rid)]

    # A viewer reads it all and gets no button at all.
    open_home(hbot, VIEWER)
    theirs = await home_published(hbot, VIEWER)
    assert "you are viewer" in flatten(theirs) and "refund for the outage" in flatten(theirs)
    assert "card payments failing" in flatten(theirs)
    assert buttons(theirs) == {}

    await hbot.drain()
    async with hbot.db() as db, db.transaction() as s:
        remembered = set((await s.execute(select(HomeViewer.user_id))).scalars().all())
    assert remembered == {APPROVER, RESPONDER, VIEWER}


async def test_a_decision_publishes_the_homes_again_without_the_request(hbot, fake_slack):
    assert "posted for approval" in hbot.slash_text("grant ada@example.com 50 refund for the outage", user=RESPONDER)
    rid = await pending_request_id(hbot)
    open_home(hbot, APPROVER)
    open_home(hbot, RESPONDER)
    before = await home_published(hbot, APPROVER)
    assert buttons(before)["revops:grants.approve"] == [str(rid)]
    await home_published(hbot, RESPONDER)
    await hbot.drain()
    published = {u: len(fake_slack.publishes(u)) for u in (APPROVER, RESPONDER, APPROVER2)}

    # Approve on the Home tab itself: through the router, as the channel's button.
    response = hbot.post_signed(home_click_body("revops:grants.approve", str(rid), user=APPROVER))
    assert response.status_code == 200
    after = await home_published(hbot, APPROVER, published[APPROVER] + 1)
    assert "Credit requests waiting: 0" in flatten(after) and "refund for the outage" not in flatten(after)
    assert "revops:grants.approve" not in buttons(after)
    theirs = await home_published(hbot, RESPONDER, published[RESPONDER] + 1)
    assert "Credit requests waiting: 0" in flatten(theirs)
    async with hbot.db() as db, db.transaction() as s:
        req = await s.get(GrantRequest, rid)
        assert (req.status, req.decided_by) == ("approved", APPROVER)
        assert await ledger.balance(s, "acct_1") == 150
    await hbot.drain()
    # One publish per person for the burst (the approval, its channel update and DM), none for
    # someone who never opened their home.
    assert len(fake_slack.publishes(APPROVER)) == published[APPROVER] + 1
    assert len(fake_slack.publishes(RESPONDER)) == published[RESPONDER] + 1
    assert fake_slack.publishes(APPROVER2) == []

    # A Home click has no response_url and no channel: its answer (here a refusal) comes by DM.
    assert hbot.post_signed(home_click_body("revops:grants.approve", str(rid), user=APPROVER2)).status_code == 200
    dms = await fake_slack.wait("chat.postMessage", where=lambda c: c.params.get("channel") == APPROVER2)
    assert "already" in flatten(dms[-1].params).lower()


async def test_a_burst_of_changes_is_one_publish_per_person_and_flags_show(hbot, fake_slack):
    home = hbot.runtime.services.extras["home"]
    home.debounce = 3.0  # (a loaded test machine takes a while for seven commands)
    open_home(hbot, ADMIN)
    await home_published(hbot, ADMIN)
    await hbot.drain()
    started = time.monotonic()
    for _ in range(3):
        assert "Dry-run is now" in hbot.slash_text("dryrun on", user=ADMIN)
        assert "Dry-run is now" in hbot.slash_text("dryrun off", user=ADMIN)
    assert "Dry-run is now on" in hbot.slash_text("dryrun on", user=ADMIN)
    burst = time.monotonic() - started
    await home_published(hbot, ADMIN, 2)
    await hbot.drain()
    calls = fake_slack.publishes(ADMIN)
    # seven toggles, one publish after the burst (more only if the burst outlasted a debounce window)
    assert len(calls) - 1 <= (1 if burst < home.debounce else 2 + int(burst // home.debounce)), (len(calls), burst)
    assert "Dry-run is on" in flatten(view_of(calls[-1]))
    assert DEBOUNCE > 0


async def test_a_read_recorded_on_a_timeline_does_not_refresh_the_homes(hbot, fake_slack):
    """`credits` in an incident channel writes a timeline line, and changes nothing the homes show:
    no refresh (the recorder that refreshes them wants mutating actions only), where a change does."""
    assert "Incident #1" in hbot.slash_text("incident declare P1 checkout card payments failing", user=RESPONDER)
    open_home(hbot, APPROVER)
    await home_published(hbot, APPROVER)
    await hbot.drain()
    count = len(fake_slack.publishes(APPROVER))
    assert "Balance" in hbot.slash_text("credits acct_1", user=VIEWER)
    await hbot.drain()  # (a refresh it had started would be drained here)
    async with hbot.db() as db, db.reading() as s:
        lines = (await s.execute(select(TimelineEntry.text).where(TimelineEntry.incident_id == 1))).scalars().all()
    assert any(line.startswith("credits") for line in lines), lines
    assert len(fake_slack.publishes(APPROVER)) == count
    hbot.slash_text("dryrun on", user=ADMIN)
    await home_published(hbot, APPROVER, count + 1)
    await hbot.drain()


async def test_an_expired_request_leaves_the_homes(hbot, fake_slack, clock):
    assert "posted for approval" in hbot.slash_text("grant ada@example.com 50 refund for the outage", user=RESPONDER)
    open_home(hbot, APPROVER)
    assert "Credit requests waiting: 1" in flatten(await home_published(hbot, APPROVER))
    await hbot.drain()
    published = len(fake_slack.publishes(APPROVER))
    clock.advance(timedelta(minutes=31))
    swept = await asyncio.wrap_future(hbot.server.call(expire_due(hbot.runtime.services)))
    assert swept == 1
    after = await home_published(hbot, APPROVER, published + 1)
    assert "Credit requests waiting: 0" in flatten(after)


async def test_a_separate_worker_publishes_the_homes_when_its_job_changes_them(hbot, fake_slack, clock):
    """`revops worker` (no Slack app of its own): a request its job expires leaves the homes,
    published by the worker's own refresher (Runtime.refresh_homes)."""
    assert "posted for approval" in hbot.slash_text("grant ada@example.com 50 refund for the outage", user=RESPONDER)
    open_home(hbot, APPROVER)
    assert "Credit requests waiting: 1" in flatten(await home_published(hbot, APPROVER))
    await hbot.drain()
    published = len(fake_slack.publishes(APPROVER))
    worker = app.runtime(hbot.settings, clock=clock)
    homes = worker.refresh_homes()
    assert homes is not None
    try:
        clock.advance(timedelta(minutes=31))
        assert await expire_due(worker.services) == 1
        await homes.drain()
        assert not homes.tasks, "the worker's refresh did not finish"
        calls = fake_slack.publishes(APPROVER)
        assert len(calls) == published + 1
        assert "Credit requests waiting: 0" in flatten(view_of(calls[-1]))
    finally:
        await worker.services.db.dispose()


async def test_job_posts_refresh_the_homes_at_most_once_per_gap(hbot, fake_slack):
    """Cadence posts come every few seconds: the refreshes they start keep `min_gap` apart,
    while a person's action still waits only the debounce."""
    home = hbot.runtime.services.extras["home"]
    home.debounce, home.min_gap = 0.05, 30.0
    open_home(hbot, APPROVER)
    await home_published(hbot, APPROVER)
    await hbot.drain()
    count = len(fake_slack.publishes(APPROVER))

    async def burst_of_job_posts():
        home._last = time.monotonic()  # as if a refresh had just finished
        for _ in range(5):
            home.job_posted()
        return home._due - time.monotonic()

    wait = await asyncio.wrap_future(hbot.server.call(burst_of_job_posts()))
    assert wait > 25, wait  # five job posts: one refresh, held for the gap, not the debounce
    assert len(fake_slack.publishes(APPROVER)) == count
    hbot.slash_text("dryrun on", user=ADMIN)  # a person's action: published after the debounce
    after = await home_published(hbot, APPROVER, count + 1)
    assert "Dry-run is on" in flatten(after)

    async def flush():
        home.min_gap = 0.0
        home.changed()

    await asyncio.wrap_future(hbot.server.call(flush()))
    await hbot.drain()


async def test_only_the_home_tab_is_published_and_a_bad_signature_publishes_nothing(hbot, fake_slack):
    response = hbot.event({"type": "app_home_opened", "user": VIEWER, "channel": "DVIEWER", "tab": "messages",
                           "event_ts": f"{time.time():.6f}"})
    assert response.status_code == 200
    body = json.dumps({"type": "event_callback", "event_id": "Ev0FORGED", "team_id": "T0TEST",
                       "event": {"type": "app_home_opened", "user": VIEWER, "tab": "home"}})
    forged = hbot.post_signed(body, {"Content-Type": "application/json"}, secret="not-the-signing-secret")
    assert forged.status_code == 401
    await hbot.drain()
    assert fake_slack.calls_of("views.publish") == []


async def test_a_section_shows_only_to_roles_that_may_read_it_and_buttons_only_to_who_may_click(hbot, fake_slack):
    async def secret(session, user, role, now, settings):
        return [Reply("the audit log's secret corner",
                      buttons=[Button("Approve", "grants.approve", "1"), Button("Cancel request", "grants.cancel", "1")])]

    async def broken(session, user, role, now, settings):
        raise RuntimeError("boom")

    sections = hbot.runtime.services.extras["home_sections"]
    sections.append(HomeSection(secret, reads="audit"))  # `audit` takes an approver
    sections.append(HomeSection(broken, reads="help"))
    open_home(hbot, RESPONDER)
    open_home(hbot, APPROVER)
    responder, approver = await home_published(hbot, RESPONDER), await home_published(hbot, APPROVER)
    assert "secret corner" not in flatten(responder)
    assert "secret corner" in flatten(approver) and set(buttons(approver)) == {"revops:grants.approve",
                                                                              "revops:grants.cancel"}
    # a section that fails says so in words, and the rest of the home is still there
    for view in (responder, approver):
        assert "This part could not be read just now: /revops help shows it." in flatten(view)
        assert "Credit requests waiting: 0" in flatten(view)

    sections[-2] = HomeSection(secret, reads="help")  # readable by all: the Approve button is still the approver's
    open_home(hbot, VIEWER)
    assert buttons(await home_published(hbot, VIEWER)) == {}
    open_home(hbot, RESPONDER)
    assert set(buttons(await home_published(hbot, RESPONDER, 2))) == {"revops:grants.cancel"}


async def test_invoice_requests_and_failed_stripe_events_are_on_the_home(hbot, fake_slack, clock):
    now = clock.now()
    async with hbot.db() as db, db.transaction() as s:
        s.add(InvoiceActionRequest(action="void", invoice_id="in_1HOME", customer_id="cus_ONE", amount=4200,
                                   currency="usd", reason="duplicate invoice <@U0ADMIN>", requester=RESPONDER,
                                   channel=CHANNEL, status="pending", dry_run=False, created_at=now,
                                   expires_at=now + timedelta(minutes=30)))
        s.add(StripeEvent(id="evt_1FAILED", type="invoice.paid", created=now, livemode=False, object_id="in_1X",
                          customer_id="cus_ONE", payload={}, status="failed", detail="no account for cus_ONE",
                          source="webhook", attempts=1, received_at=now - timedelta(hours=1), processed_at=now))
        s.add(StripeEvent(id="evt_1OLD", type="invoice.paid", created=now, livemode=False, payload={},
                          status="failed", source="webhook", attempts=1, received_at=now - timedelta(days=2),
                          processed_at=now))
    open_home(hbot, APPROVER)
    view = await home_published(hbot, APPROVER)
    text = flatten(view)
    assert "Invoice requests waiting: 1" in text and "void it: in_1HOME (42.00 USD)" in text
    assert "<@U0ADMIN>" not in json.dumps(view)  # a person's text is data: no mention
    assert buttons(view)["revops:invoices.approve"] == ["1"] and buttons(view)["revops:invoices.reject"] == ["1"]
    assert "Failed Stripe events, last 24 hours: 1" in text and "evt_1FAILED" in text
    assert "no account for cus_ONE" in text and "evt_1OLD" not in text
    open_home(hbot, RESPONDER)
    mine = await home_published(hbot, RESPONDER)
    assert buttons(mine) == {"revops:invoices.cancel": ["1"]}
