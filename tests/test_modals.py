"""Modals (issue 19 item 1): a command typed with arguments missing opens its form; a signed
view_submission is checked by the command's own grammar and runs through the router like the
typed command — on SQLite and PostgreSQL, through the real bolt signature verification."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from urllib.parse import parse_qs, urlencode

import pytest
from sqlalchemy import select

from bot.billing import ledger
from bot.grants.models import GrantRequest
from bot.incidents.models import Incident, TimelineEntry
from bot.models import AuditRecord
from tests.support.harness import ADMIN, CHANNEL, RESPONDER, VIEWER, flatten
from tests.support.slack_requests import slash_body


@pytest.fixture
def mbot(bot):
    asyncio.run(seed(bot))
    return bot


async def seed(bot):
    now = bot.runtime.services.clock.now()
    async with bot.db() as db, db.transaction() as s:
        await ledger.ensure_account(s, "acct_1", stripe_customer_id="cus_ONE", email="ada@example.com", at=now)
        await ledger.append_entry(s, account_id="acct_1", delta=100, kind="purchase", reason="seed pack",
                                  actor="stripe", idempotency_key="seed:acct_1", at=now)
        await ledger.ensure_account(s, "acct_2", email="bob@example.com", at=now)


def slash(bot, text, *, user=RESPONDER, channel=CHANNEL):
    """A signed slash command; returns (response, its trigger_id)."""
    body = slash_body(text, user=user, channel=channel, response_url=bot.response_url())
    trigger = parse_qs(body)["trigger_id"][0]
    return bot.post_signed(body), trigger


def submission_body(view: dict, values: dict[str, str], *, user: str) -> str:
    """A view_submission of `view` (as views.open showed it) with `values` filled in, as Slack sends it."""
    state: dict[str, dict] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        element, value = block["element"], values.get(block["block_id"])
        if element["type"] == "static_select":
            chosen = {"text": {"type": "plain_text", "text": value}, "value": value} if value else None
            state[block["block_id"]] = {element["action_id"]: {"type": "static_select", "selected_option": chosen}}
        else:
            state[block["block_id"]] = {element["action_id"]: {"type": "plain_text_input", "value": value}}
    payload = {
        "type": "view_submission",
        "team": {"id": "T0TEST", "domain": "revops-test"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEST"},
        "api_app_id": "A0REVOPS",
        "token": "legacy-verification-token-unused",
        "trigger_id": uuid.uuid4().hex,
        "view": {**view, "state": {"values": state}, "team_id": "T0TEST", "app_id": "A0REVOPS"},
        "response_urls": [],
    }
    return urlencode({"payload": json.dumps(payload)})


def submit(bot, view, values, *, user=RESPONDER):
    return bot.post_signed(submission_body(view, values, user=user))


async def opened(bot, count=1) -> dict:
    call = (await bot.slack.wait("views.open", count))[count - 1]
    view = call.params["view"]
    return json.loads(view) if isinstance(view, str) else view


def inputs(view) -> dict[str, dict]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


async def rows(bot, model, *where):
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(model).where(*where).order_by(model.id))).scalars().all()


async def ephemeral_to(bot, user, contains, timeout=10):
    calls = await bot.slack.wait("chat.postEphemeral", 1, timeout,
                                 where=lambda c: c.params.get("user") == user and contains in flatten(c.params))
    return flatten(calls[-1].params)


async def declared(bot, summary="checkout conversion down") -> int:
    answer = bot.answer_text(f"incident declare P1 checkout {summary}", user=RESPONDER)
    assert "declared" in answer, answer
    return int(answer.split("Incident #", 1)[1].split(" ", 1)[0])


async def test_grant_without_arguments_opens_the_form_at_once(mbot, fake_slack):
    started = time.time()
    response, trigger = slash(mbot, "grant")
    assert response.status_code == 200 and response.text == ""  # no usage line: the form opens
    call = (await fake_slack.wait("views.open"))[0]
    assert call.params["trigger_id"] == trigger and call.at - started < 2.5  # within the trigger's 3 s
    view = await opened(mbot)
    assert view["callback_id"] == "revops:form" and view["title"]["text"] == "Request credits"
    fields = inputs(view)
    assert list(fields) == ["account", "amount", "reason"]
    assert fields["reason"]["element"]["multiline"] is True and not fields["account"]["optional"]
    assert json.loads(view["private_metadata"]) == {"command": "grant", "channel": CHANNEL}
    await mbot.drain()
    assert fake_slack.responses_list() == [] and fake_slack.calls_of("chat.postEphemeral") == []


async def test_a_prefilled_account_is_shown_by_views_update_after_the_read(mbot, fake_slack):
    slash(mbot, "grant acct_1")
    view = await opened(mbot)
    assert inputs(view)["account"]["element"]["initial_value"] == "acct_1"
    assert "Looking it up" in flatten(view)
    update = (await fake_slack.wait("views.update"))[0]
    opened_view = next(iter(fake_slack.views.values()))
    assert update.params["view_id"] == opened_view["id"]
    updated = update.params["view"]
    updated = json.loads(updated) if isinstance(updated, str) else updated
    assert "acct_1" in flatten(updated) and "100 credits now" in flatten(updated)
    assert list(inputs(updated)) == ["account", "amount", "reason"]  # same ids: what was typed is kept


async def test_enter_in_the_account_field_looks_the_account_up(mbot, fake_slack):
    slash(mbot, "grant")
    await opened(mbot)
    [stored] = fake_slack.views.values()
    account = inputs(stored)["account"]
    assert account["dispatch_action"] is True
    payload = {
        "type": "block_actions", "team": {"id": "T0TEST", "domain": "revops-test"},
        "user": {"id": RESPONDER, "username": "u0responder", "team_id": "T0TEST"}, "api_app_id": "A0REVOPS",
        "token": "legacy-verification-token-unused", "trigger_id": uuid.uuid4().hex,
        "container": {"type": "view", "view_id": stored["id"]},
        "view": {**stored, "state": {"values": {"account": {"account": {"type": "plain_text_input",
                                                                       "value": "ada@example.com"}}}}},
        "actions": [{"action_id": "account", "block_id": "account", "type": "plain_text_input",
                     "value": "ada@example.com", "action_ts": f"{time.time():.6f}"}],
    }
    response = mbot.post_signed(urlencode({"payload": json.dumps(payload)}))
    assert response.status_code == 200
    update = (await fake_slack.wait("views.update"))[0]
    assert update.params["view_id"] == stored["id"] and update.params["hash"] == stored["hash"]
    assert "Account acct_1: 100 credits now." in flatten(update.params).replace("`", "")


async def test_a_bad_amount_is_answered_on_its_field_and_changes_nothing(mbot, fake_slack):
    slash(mbot, "grant")
    view = await opened(mbot)
    response = submit(mbot, view, {"account": "acct_1", "amount": "lots", "reason": "refund"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["response_action"] == "errors" and list(answer["errors"]) == ["amount"]
    assert "must be a whole number" in answer["errors"]["amount"] and "lots" in answer["errors"]["amount"]
    assert await rows(mbot, GrantRequest) == []
    assert await rows(mbot, AuditRecord, AuditRecord.command == "grant") == []
    control = submit(mbot, view, {"account": "acct_1", "amount": "5", "reason": "refund\x00now"}).json()
    assert list(control["errors"]) == ["reason"] and "control character (U+0000)" in control["errors"]["reason"]


async def test_an_unknown_account_is_answered_on_the_account_field(mbot, fake_slack):
    slash(mbot, "grant")
    view = await opened(mbot)
    answer = submit(mbot, view, {"account": "acct_nobody", "amount": "5", "reason": "refund"}).json()
    assert answer["response_action"] == "errors" and list(answer["errors"]) == ["account"]
    assert "no account matches acct_nobody" in answer["errors"]["account"]
    assert await rows(mbot, GrantRequest) == []


async def test_a_valid_grant_runs_like_the_typed_command(mbot, fake_slack):
    incident = await declared(mbot)
    typed = mbot.slash_text("grant acct_2 7 typed refund", user=RESPONDER)
    assert "posted for approval" in typed
    slash(mbot, "grant")
    view = await opened(mbot)
    response = submit(mbot, view, {"account": "acct_1", "amount": "25", "reason": "goodwill for\nthe outage"})
    assert response.status_code == 200 and response.text == ""  # the modal closes
    answer = await ephemeral_to(mbot, RESPONDER, "posted for approval")
    requests = await rows(mbot, GrantRequest, GrantRequest.account_id == "acct_1")
    assert len(requests) == 1 and requests[0].requester == RESPONDER and requests[0].amount == 25
    assert requests[0].reason == "goodwill for\nthe outage" and f"Request #{requests[0].id}" in answer
    await fake_slack.wait("chat.postMessage", where=lambda c: c.params.get("channel") == CHANNEL
                          and f'"value": "{requests[0].id}"' in json.dumps(c.params.get("blocks")))
    audits = await rows(mbot, AuditRecord, AuditRecord.command == "grant")
    assert len(audits) == 2 and {a.actor for a in audits} == {RESPONDER}
    assert {a.surface for a in audits} == {"slack"} and {a.outcome for a in audits} == {"ok"}
    assert set(audits[0].args) == set(audits[1].args)  # the same record as the typed command's
    timeline = await rows(mbot, TimelineEntry, TimelineEntry.incident_id == incident)
    grants = [e for e in timeline if e.text.startswith("grant ")]
    assert len(grants) == 2 and "acct_1" in grants[1].text


async def test_a_viewer_is_refused_in_words(mbot, fake_slack):
    slash(mbot, "grant", user=VIEWER)
    view = await opened(mbot)
    response = submit(mbot, view, {"account": "acct_1", "amount": "5", "reason": "refund"}, user=VIEWER)
    assert response.status_code == 200 and response.text == ""
    answer = await ephemeral_to(mbot, VIEWER, "needs the responder role")
    assert "you are viewer" in answer
    assert await rows(mbot, GrantRequest) == []
    denied = await rows(mbot, AuditRecord, AuditRecord.command == "grant")
    assert [a.outcome for a in denied] == ["denied"]


async def test_dry_run_applies_to_a_submission(mbot, fake_slack):
    assert "Dry-run is now on" in mbot.slash_text("dryrun on", user=ADMIN)
    slash(mbot, "grant acct_1")
    view = await opened(mbot)
    submit(mbot, view, {"account": "acct_1", "amount": "5", "reason": "refund"})
    answer = await ephemeral_to(mbot, RESPONDER, "posted for approval")
    assert "dry run" in answer.lower()
    requests = await rows(mbot, GrantRequest)
    assert len(requests) == 1 and requests[0].dry_run is True


async def test_credits_adjust_and_invoice_void_open_their_forms(mbot, fake_slack):
    slash(mbot, "credits adjust acct_1")
    view = await opened(mbot)
    assert list(inputs(view)) == ["account", "amount", "reason"]
    assert json.loads(view["private_metadata"])["command"] == "credits adjust"
    bad = submit(mbot, view, {"account": "acct_1", "amount": "20", "reason": "wrong pack"}).json()
    assert list(bad["errors"]) == ["amount"] and "signed whole number" in bad["errors"]["amount"]
    slash(mbot, "invoice void in_1MISSING")
    view = await opened(mbot, 2)
    assert list(inputs(view)) == ["id", "reason"] and inputs(view)["id"]["element"]["initial_value"] == "in_1MISSING"
    update = (await fake_slack.wait("views.update", 2))[-1]  # (the first: the adjust form's account)
    assert "Neither Stripe nor the mirror has invoice in_1MISSING" in flatten(update.params)


async def test_incident_declare_form_checks_figures_then_declares(mbot, fake_slack):
    slash(mbot, "incident declare")
    view = await opened(mbot)
    fields = inputs(view)
    assert list(fields) == ["severity", "stage", "summary", "baseline", "current", "traffic", "aov", "channel"]
    assert [o["value"] for o in fields["severity"]["element"]["options"]] == ["P1", "P2", "P3"]
    assert fields["baseline"]["optional"] and not fields["summary"]["optional"]
    values = {"severity": "P2", "stage": "checkout", "summary": "card payments fail\nfor EU customers",
              "baseline": "3.2%", "current": "lots"}
    bad = submit(mbot, view, values).json()
    assert bad["response_action"] == "errors" and list(bad["errors"]) == ["current"]
    assert "current must be a number" in bad["errors"]["current"]
    assert await rows(mbot, Incident) == []
    forged = submit(mbot, view, {**values, "severity": "P9", "current": "2.1%"}).json()
    assert list(forged["errors"]) == ["severity"]
    response = submit(mbot, view, {**values, "current": "2.1%"})
    assert response.status_code == 200 and response.text == ""
    await ephemeral_to(mbot, RESPONDER, "declared")
    incidents = await rows(mbot, Incident)
    assert len(incidents) == 1 and incidents[0].severity == "P2"
    assert incidents[0].summary == "card payments fail\nfor EU customers" and incidents[0].declared_by == RESPONDER
    assert incidents[0].impact and incidents[0].impact["baseline"] == pytest.approx(0.032)
    assert [a.outcome for a in await rows(mbot, AuditRecord, AuditRecord.command == "incident declare")] == ["ok"]
    kinds = [e.kind for e in await rows(mbot, TimelineEntry, TimelineEntry.incident_id == incidents[0].id)]
    assert kinds[0] == "declare"


async def test_the_post_update_button_opens_the_update_form(mbot, fake_slack):
    incident = await declared(mbot)
    response, _ = mbot.click("revops:form:incident update", f"#{incident}", user=RESPONDER)
    assert response.status_code == 200
    view = await opened(mbot)
    fields = inputs(view)
    assert list(fields) == ["incident", "text"] and fields["text"]["element"]["multiline"] is True
    assert fields["incident"]["element"]["initial_value"] == f"#{incident}"
    update = (await fake_slack.wait("views.update"))[0]
    assert "checkout conversion down" in flatten(update.params)
    bad = submit(mbot, view, {"incident": "twelve", "text": "rolled back"}).json()
    assert list(bad["errors"]) == ["incident"]
    empty = submit(mbot, view, {"incident": f"#{incident}", "text": ""}).json()
    assert list(empty["errors"]) == ["text"]
    submit(mbot, view, {"incident": f"#{incident}", "text": "rolled back the deploy\nerror rate falling"})
    await ephemeral_to(mbot, RESPONDER, f"Update posted on #{incident}")
    entries = await rows(mbot, TimelineEntry, TimelineEntry.incident_id == incident, TimelineEntry.kind == "update")
    assert [e.text for e in entries] == ["Update: rolled back the deploy\nerror rate falling"]
    await mbot.drain()
    # the router's generic click listener left the form button alone
    assert fake_slack.responses_list() == []
    assert not [c for c in fake_slack.calls_of("chat.postEphemeral") if "no longer handled" in flatten(c.params)]


async def test_typed_commands_with_their_arguments_run_as_before(mbot, fake_slack):
    assert "posted for approval" in mbot.slash_text("grant acct_1 5 refund", user=RESPONDER)
    router = mbot.runtime.router  # elsewhere than Slack (console, exec), arguments missing: the usage line
    for text, missing in (("grant acct_1 50", "missing <reason>"), ("grant", "missing <account>")):
        outcome = await router.handle_text(text, actor=RESPONDER, channel=CHANNEL, surface="console")
        assert outcome.outcome == "usage" and missing in outcome.reply.plain()
    assert "Usage: /revops grant approve" in mbot.slash_text("grant approve", user=ADMIN)
    await mbot.drain()
    assert fake_slack.calls_of("views.open") == []


async def test_when_views_open_fails_the_usage_line_is_answered(mbot, fake_slack):
    fake_slack.fail("views.open", status=200, error="expired_trigger_id")
    slash(mbot, "grant")
    answer = await ephemeral_to(mbot, RESPONDER, "Usage: /revops grant")
    assert "missing &lt;account&gt;" in answer
