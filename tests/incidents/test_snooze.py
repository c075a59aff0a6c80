"""Snoozable reminders (issue 19 item 6): the "no update for a while" reminder carries **Post
update** (`revops:form:incident update`, the update modal) and **Snooze 30m** / **Snooze 1h**
(responder, through the router: roles, dry-run, audit); a snooze moves the incident's next
reminder by that much, is audited and is on the timeline. Clicked through signed block_actions
payloads; the scheduler's drain says when the jobs due have run. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from bot.models import AuditRecord
from bot.scheduler import drain
from tests.incidents.conftest import jobs, timeline
from tests.support.harness import ADMIN, CHANNEL, RESPONDER, VIEWER, flatten

START = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)  # the FakeClock's start
REMINDER = "incident:1:update_reminder"


async def reminder_due(services) -> datetime:
    [job] = [j for j in await jobs(services, 1) if j.key == REMINDER]
    assert job.status == "active"
    return job.due_at


async def snooze_audit(services) -> list[AuditRecord]:
    async with services.db.transaction() as s:
        return list((await s.execute(select(AuditRecord).where(AuditRecord.command == "incident.snooze")
                                     .order_by(AuditRecord.id))).scalars().all())


def reminder_buttons(fake_slack) -> list[dict]:
    [post] = [c for c in fake_slack.calls_of("chat.postMessage")
              if c.params.get("channel") == CHANNEL and "Reminder: no update" in flatten(c.params)]
    blocks = post.params["blocks"]
    blocks = blocks if isinstance(blocks, list) else json.loads(blocks)
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_the_reminder_can_be_snoozed_from_its_buttons(ibot, services, fake_slack, clock):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    ibot.slash_text("incident ack", user=RESPONDER)
    assert await reminder_due(services) == START + timedelta(minutes=30)

    clock.advance(timedelta(minutes=31))  # no human update for 31m: the reminder goes out
    assert REMINDER in await drain(services)
    await ibot.drain()
    buttons = reminder_buttons(fake_slack)
    assert [(b["text"]["text"], b["action_id"], b["value"]) for b in buttons] == [
        ("Post update", "revops:form:incident update", "#1"),
        ("Snooze 30m", "revops:incident.snooze", "1 30m"),
        ("Snooze 1h", "revops:incident.snooze~2", "1 1h"),
    ]
    assert await reminder_due(services) == START + timedelta(minutes=60)  # the next slot

    # Post update opens the update form with the incident filled in (bot/slack/modals.py)
    response, _ = ibot.click(buttons[0]["action_id"], buttons[0]["value"], user=RESPONDER)
    assert response.status_code == 200
    view = (await fake_slack.wait("views.open"))[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    fields = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert fields["incident"]["element"]["initial_value"] == "#1" and "text" in fields

    # a viewer is refused in words, and nothing moves
    answer = flatten(ibot.click_and_wait(buttons[1]["action_id"], buttons[1]["value"], user=VIEWER))
    assert "needs responder" in answer.lower() or "responder" in answer, answer
    assert await reminder_due(services) == START + timedelta(minutes=60)
    [denied] = await snooze_audit(services)
    assert (denied.actor, denied.outcome) == (VIEWER, "denied")

    # a responder snoozes 30m: the next reminder moves from 13:00 to 13:30
    answer = flatten(ibot.click_and_wait(buttons[1]["action_id"], buttons[1]["value"], user=RESPONDER))
    assert "snoozed for 30m" in answer and "13:30 UTC" in answer, answer
    assert await reminder_due(services) == START + timedelta(minutes=90)
    denied, record = await snooze_audit(services)
    assert (record.actor, record.outcome, record.subject) == (RESPONDER, "ok", "incident:1")
    assert record.args["value"] == "1 30m" and record.args["span"] == "30m"
    [entry] = [e for e in await timeline(services, 1) if e.kind == "snooze"]
    assert entry.text == f"Reminders snoozed for 30m by @{RESPONDER}; next reminder at 13:30 UTC"
    assert (entry.actor, entry.at) == (RESPONDER, START + timedelta(minutes=31))
    assert "Reminders snoozed for 30m" in ibot.slash_text("incident timeline", user=VIEWER)

    clock.advance(timedelta(minutes=30))  # 13:01: the reminder's old slot has passed; it is not due
    assert REMINDER not in await drain(services)
    clock.advance(timedelta(minutes=30))  # 13:31: it is
    assert REMINDER in await drain(services)
    assert await reminder_due(services) == START + timedelta(minutes=120)

    # Snooze 1h (the second button of the same action in one message) from the next reminder
    answer = flatten(ibot.click_and_wait(buttons[2]["action_id"], buttons[2]["value"], user=RESPONDER))
    assert "snoozed for 1h" in answer and "15:00 UTC" in answer, answer
    assert await reminder_due(services) == START + timedelta(minutes=180)


async def test_a_snooze_in_dry_run_moves_nothing_and_a_resolved_incident_has_none(ibot, services, clock):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    ibot.slash_text("dryrun on", user=ADMIN)
    answer = flatten(ibot.click_and_wait("revops:incident.snooze", "1 1h", user=RESPONDER))
    assert "dry run" in answer.lower() and "snoozed for 1h" in answer, answer
    assert await reminder_due(services) == START + timedelta(minutes=30)
    assert [e for e in await timeline(services, 1) if e.kind == "snooze"] == []
    assert [r.outcome for r in await snooze_audit(services)] == ["dry_run"]
    ibot.slash_text("dryrun off", user=ADMIN)

    # a button that names no span, or an incident that is resolved: said in words
    assert "30m or 1h" in flatten(ibot.click_and_wait("revops:incident.snooze", "1 2h", user=RESPONDER))
    ibot.slash_text("incident resolve a stuck queue", user=RESPONDER)
    answer = flatten(ibot.click_and_wait("revops:incident.snooze", "1 30m", user=RESPONDER))
    assert "already resolved" in answer, answer
