"""Cadences, reminders, escalation, catch-up and panic, driven by a FakeClock
(the scheduler runs on its own engine against the live bot's database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bot.scheduler import next_due, run_due
from bot.slack.blocks import mrkdwn
from bot.text import from_json
from tests.incidents.conftest import head, heads, incident_runs, jobs, outbox, timeline
from tests.support.harness import ADMIN, CHANNEL, RESPONDER


async def test_cadences_reminder_and_escalation_level_by_level(ibot, services, clock):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    assert incident_runs(await run_due(services)) == ["incident:1:escalation"]  # L1 (after 0m) at once
    clock.advance(timedelta(minutes=14))
    assert incident_runs(await run_due(services)) == []
    clock.advance(timedelta(minutes=1))
    assert incident_runs(await run_due(services)) == ["incident:1:escalation"]  # L2 at 15m
    escalations = [m for m in await outbox(services, CHANNEL) if "Escalation" in head(m)]
    assert [("U0ONCALL" in str(m.reply), "U0EM" in str(m.reply)) for m in escalations] == [(True, False),
                                                                                         (False, True)]
    clock.advance(timedelta(minutes=1))
    ibot.slash_text("incident ack", user=RESPONDER)  # stops escalation before L3 (1h)

    clock.advance(timedelta(minutes=14))  # t = 30m: first revenue update; no human update yet -> reminder
    posted = len(await outbox(services, CHANNEL))
    assert incident_runs(await run_due(services)) == ["incident:1:revenue_update", "incident:1:update_reminder"]
    new = [mrkdwn(from_json(m.reply["text"])) for m in (await outbox(services, CHANNEL))[posted:]]  # as Slack gets it
    assert len(new) == 2
    reminder, revenue = sorted(new)  # due together: either order on PostgreSQL (concurrent jobs)
    assert revenue.startswith(":moneybag: *Revenue-team update 1")
    assert reminder.startswith(":alarm_clock: *Reminder: no update on incident #1 for 30m")

    clock.advance(timedelta(minutes=10))
    ibot.slash_text("incident update payment provider is failing over", user=RESPONDER)
    clock.advance(timedelta(minutes=20))  # t = 60m: revenue 2 + engineering 1; human update 20m ago: no reminder
    posted = len(await outbox(services, CHANNEL))
    assert incident_runs(await run_due(services)) == [
        "incident:1:revenue_update", "incident:1:engineering_update", "incident:1:update_reminder"]
    new = heads(await outbox(services, CHANNEL))[posted:]
    # due at the same moment: on PostgreSQL the two jobs run concurrently, so their posts queue in either order
    assert sorted(h.split(" —")[0] for h in new) == ["Engineering update 1", "Revenue-team update 2"]
    clock.advance(timedelta(minutes=10))  # t = 70m: the window since the human update closes
    assert incident_runs(await run_due(services)) == ["incident:1:update_reminder"]
    assert "Reminder: no update on incident #1 for 30m" in heads(await outbox(services, CHANNEL))[-1]
    clock.advance(timedelta(hours=3))  # t = 4h10m: one catch-up each, in the order they fell due
    assert incident_runs(await run_due(services)) == [
        "incident:1:revenue_update", "incident:1:update_reminder", "incident:1:engineering_update"]
    assert not any("Escalation" in h and "U0VP" in h for h in heads(await outbox(services)))

    kinds = [e.kind for e in await timeline(services, 1)]
    # L1, L2; revenue 1 + reminder; revenue 2 + engineering 1; reminder; the three catch-ups
    assert kinds.count("auto_post") == 10 and "escalation" not in kinds
    ibot.slash_text("incident resolve failover finished", user=RESPONDER)
    clock.advance(timedelta(hours=2))
    before = len(await outbox(services))
    assert incident_runs(await run_due(services)) == []  # resolving stopped every job of the incident
    assert len(await outbox(services)) == before
    assert {j.key: j.status for j in await jobs(services, 1)} == {
        "incident:1:revenue_update": "done", "incident:1:engineering_update": "done",
        "incident:1:update_reminder": "done", "incident:1:exec_summary": "done", "incident:1:escalation": "done"}


async def test_a_ten_minute_clock_jump_posts_one_catch_up(fast_bot, fast_services, clock):
    services = fast_services
    fast_bot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    fast_bot.slash_text("incident ack", user=RESPONDER)
    clock.advance(timedelta(seconds=30))
    assert incident_runs(await run_due(services)) == ["incident:1:revenue_update", "incident:1:update_reminder"]
    assert sum("Revenue-team update 1" in h for h in heads(await outbox(services))) == 1
    assert "global:daily_reconcile" in [j.key for j in await jobs(services)]  # the billing hook, daily

    clock.advance(timedelta(minutes=10))  # the worker was down for ten minutes: 20 revenue slots
    assert incident_runs(await run_due(services)) == [  # once each, whatever the slots missed
        "incident:1:revenue_update", "incident:1:engineering_update", "incident:1:update_reminder"]
    assert await run_due(services) == []  # a second tick at the same instant runs nothing again
    posts = heads(await outbox(services))
    revenue = [h for h in posts if "Revenue-team update" in h]
    engineering = [h for h in posts if "Engineering update" in h]
    assert len(revenue) == 2 and len(engineering) == 1
    latest = [m for m in await outbox(services) if "Revenue-team update 2" in head(m)][0]
    assert "Catch-up: 19 scheduled updates could not be posted on time" in str(latest.reply)
    # the cadence resumes from the present, not from the missed slots
    clock.advance(timedelta(seconds=29))
    assert incident_runs(await run_due(services)) == []
    assert sum("Revenue-team update" in h for h in heads(await outbox(services))) == 2
    clock.advance(timedelta(seconds=1))  # t = 11m: the next slot of all three
    assert incident_runs(await run_due(services)) == [
        "incident:1:revenue_update", "incident:1:engineering_update", "incident:1:update_reminder"]
    assert sum("Revenue-team update" in h for h in heads(await outbox(services))) == 3


async def test_panic_mode_records_what_would_have_been_posted(fast_bot, fast_services, clock, fake_slack):
    services = fast_services
    fast_bot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    fast_bot.slash_text("incident ack", user=RESPONDER)
    fast_bot.slash_text("panic on", user=ADMIN)
    fast_bot.click_and_wait("revops:flags.panic_confirm", "on", user=ADMIN)
    in_channel = lambda c: c.params.get("channel") == CHANNEL  # noqa: E731 (the commander's DM aside)
    fake_slack.wait_for("chat.postMessage", 3, where=in_channel)  # initial, ack, panic announcement
    sent_before = len(fake_slack.wait_for("chat.postMessage", 3, where=in_channel))

    clock.advance(timedelta(seconds=60))
    await run_due(services)
    held = await outbox(services, status="held")
    assert sorted(h.split(" —")[0] for h in heads(held)) == [
        "Engineering update 1", "Reminder: no update on incident #1 for 1m", "Revenue-team update 1"]
    entries = await timeline(services, 1)
    assert "flags" in [e.kind for e in entries]  # the panic toggle itself is on the timeline
    held_entries = [e for e in entries if e.kind == "held"]
    assert len(held_entries) == 3
    # stored as plain data: the headline's plain reading, no Slack markup
    assert any("Panic mode: held the revenue-team update (not posted). It would have said: "
               "Revenue-team update 1 — [P1] incident #1" in e.text for e in held_entries)

    fast_bot.slash_text("panic off", user=ADMIN)
    clock.advance(timedelta(seconds=30))
    assert incident_runs(await run_due(services)) == ["incident:1:revenue_update", "incident:1:update_reminder"]
    (update2,) = [m for m in await outbox(services) if "Revenue-team update 2" in head(m)]
    assert update2.status != "held"  # queued for Slack (the live bot may have sent it already)
    fake_slack.wait_for("chat.postMessage", sent_before + 3, where=in_channel)  # panic-off, update 2, reminder
    texts = [c.params.get("text", "") for c in fake_slack.calls_of("chat.postMessage")]
    assert not any("Revenue-team update 1" in t for t in texts)  # the held one never goes out
    assert sum("Revenue-team update 2" in t for t in texts) == 1


def test_next_due_skips_missed_slots():
    from datetime import datetime, timedelta, timezone

    due = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    every = timedelta(seconds=30)
    assert next_due(due, every, due) == (due + every, 0)
    assert next_due(due, every, due + timedelta(minutes=10)) == (due + timedelta(minutes=10, seconds=30), 20)
    assert next_due(due, every, due + timedelta(seconds=45)) == (due + timedelta(seconds=60), 1)
    assert next_due(due, None, due) == (None, 0)
