"""The whole incident lifecycle through signed Slack requests."""

from __future__ import annotations

from tests.incidents.conftest import incident, jobs, timeline
from tests.support.harness import CHANNEL, RESPONDER, VIEWER, flatten

RESPONDER2 = "U0RESPONDER2"


def posted(fake_slack, channel: str = CHANNEL) -> list[str]:
    return [flatten(c.params) for c in fake_slack.calls_of("chat.postMessage") if c.params.get("channel") == channel]


def wait_posted(fake_slack, count: int, channel: str = CHANNEL) -> list[str]:
    fake_slack.wait_for("chat.postMessage", count, where=lambda c: c.params.get("channel") == channel)
    return posted(fake_slack, channel)


async def test_declare_ack_update_resolve_report(ibot, services, clock, fake_slack):
    text = ibot.slash_text("incident declare P1 checkout conversion down baseline=3.2% current=2.1% "
                           "traffic=1200/h aov=80", user=RESPONDER)
    assert "Incident #1 declared (P1, checkout)" in text
    initial = wait_posted(fake_slack, 1)[0]
    assert "Subject: [P1 CRITICAL] checkout: conversion down" in initial
    assert "$1,056.00/hour" in initial and "$25,344.00/day" in initial  # (0.032-0.021) × 1200 × 80
    assert "acknowledge with /revops incident ack within 15m" in initial
    assert "http://revops.test/incidents/1?exp=" in initial  # the signed page link
    kinds = sorted(j.kind for j in await jobs(services, 1))
    assert kinds == ["engineering_update", "escalation", "exec_summary", "revenue_update", "update_reminder"]

    # one open incident per channel
    again = ibot.slash_text("incident declare P2 checkout another thing", user=RESPONDER)
    assert "Incident #1" in again and "already open in this channel" in again

    clock.advance(240)
    assert "You are the incident commander of #1 (acknowledged after 4m)" in ibot.slash_text("incident ack",
                                                                                             user=RESPONDER)
    assert "already acknowledged by" in ibot.slash_text("incident ack", user=RESPONDER2)
    assert [j.status for j in await jobs(services, 1) if j.kind == "escalation"] == ["done"]

    clock.advance(300)
    assert "Update posted on #1" in ibot.slash_text("incident update rolled back the 11:02 deploy current=2.9%",
                                                    user=RESPONDER)
    assert "Added to the report's lessons learned of #1" in ibot.slash_text(
        "incident note lesson: alert on provider latency", user=RESPONDER)
    assert "Added to the timeline of #1" in ibot.slash_text("incident note provider confirmed", user=RESPONDER)
    assert "Action item added" in ibot.slash_text("incident action add a timeout alarm", user=RESPONDER)
    assert "already P1" in ibot.slash_text("incident severity P1", user=RESPONDER)
    assert "unknown severity P5: use P1, P2 or P3" in ibot.slash_text("incident severity P5", user=RESPONDER)
    assert "now P2 (was P1)" in ibot.slash_text("incident severity P2", user=RESPONDER)
    clock.advance(600)
    assert "marked mitigated" in ibot.slash_text("incident mitigated flag flipped off", user=RESPONDER)

    status = ibot.slash_text("incident status", user=VIEWER)
    assert "Incident #1 [P2] checkout: conversion down — mitigated, 19m" in status
    assert "acknowledged after 4m (target 1h)" in status
    assert "$288.00/hour" in status  # (0.032 - 0.029) × 1200 × 80 after the update's figures
    assert "Latest update: rolled back the 11:02 deploy" in status
    # the jobs' next times, soonest first (read in the status row's one statement)
    assert ("revenue update in 50m, reminder check in 50m, engineering update in 1h 50m, "
            "executive summary in 23h 50m") in status

    clock.advance(660)
    text = ibot.slash_text("incident resolve payment provider timeouts after a config push", user=RESPONDER)
    assert "Incident #1 resolved after 30m" in text
    assert "already resolved" in ibot.slash_text("incident resolve again", user=RESPONDER)
    assert "already resolved" in ibot.slash_text("incident update too late", user=RESPONDER)
    assert all(j.status == "done" for j in await jobs(services, 1))
    row = await incident(services, 1)
    assert (row.status, row.commander, row.open_channel) == ("resolved", RESPONDER, None)

    posts = wait_posted(fake_slack, 6)
    assert any("Incident #1 acknowledged by <@U0RESPONDER>" in p for p in posts)
    assert any("Update on incident #1" in p and "rolled back the 11:02 deploy" in p for p in posts)
    assert any("severity changed P1 → P2" in p for p in posts)
    assert any("Incident #1 mitigated" in p and "flag flipped off" in p for p in posts)
    resolved = [p for p in posts if "Incident #1 resolved" in p][0]
    assert "Root cause: payment provider timeouts after a config push" in resolved
    assert "Post-incident report" in resolved

    entries = await timeline(services, 1)
    assert [e.kind for e in entries] == ["declare", "ack", "update", "note", "note", "action", "severity",
                                         "mitigated", "resolve"]
    assert all(e.actor == RESPONDER for e in entries)

    report = ibot.slash_text("incident report", user=VIEWER)
    assert "Post-incident report — incident #1: checkout — conversion down" in report
    assert "Severity: P2" in report
    assert "Duration: 30m" in report
    assert "Time to acknowledge: 4m" in report
    assert "Revenue impact: $144.00 lost over 30m" in report  # $288/h × 0.5 h
    assert "Root cause: payment provider timeouts after a config push" in report
    assert "Severity changed P1 → P2" in report  # the timeline
    assert "• alert on provider latency" in report  # lessons learned
    assert "• add a timeout alarm" in report  # action items
    assert "http://revops.test/incidents/1?exp=" in report

    timeline_text = ibot.slash_text("incident timeline #1", user=VIEWER)
    assert "9 entries" in timeline_text and "Acknowledged after 4m" in timeline_text
    listing = ibot.slash_text("incident list", user=VIEWER)
    assert "#1 [P2] checkout: conversion down — resolved, 30m" in listing
    stats = ibot.slash_text("incident stats", user=VIEWER)
    assert "P2\n1 incident: MTTA 4m (target 1h), MTTR 30m (target 4h); 0 open" in stats


def test_clear_answers_for_bad_requests(ibot):
    no_incident = ibot.slash_text("incident ack", user=RESPONDER)
    assert "There is no open incident in this channel" in no_incident
    assert "unknown severity P4: use P1, P2 or P3" in ibot.slash_text("incident declare P4 checkout down",
                                                                       user=RESPONDER)
    opened = ibot.slash("incident declare P1", user=RESPONDER)  # arguments missing: the form opens (test_modals.py)
    assert opened.status_code == 200 and opened.text == ""
    usage = ibot.slash_text("incident declare P1 checkout down --channel old", user=RESPONDER)
    assert "Usage: /revops incident declare" in usage
    assert "There is no incident #42" in ibot.slash_text("incident status #42", user=VIEWER)
    assert "is not an incident number" in ibot.slash_text("incident status twelve", user=VIEWER)
    nonsense = ibot.slash_text("incident declare P1 checkout down baseline=abc", user=RESPONDER)
    assert "baseline must be a number" in nonsense and "Usage:" in nonsense
    assert "needs the responder role" in ibot.slash_text("incident declare P1 checkout down", user=VIEWER)
    assert "unknown incident sub-command frob" in ibot.slash_text("incident frob", user=VIEWER)


def test_hash_id_addresses_another_channels_incident(ibot, fake_slack):
    ibot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER, channel="C0OTHER")
    text = ibot.slash_text("incident update #1 retrying the invoice run", user=RESPONDER)
    assert "Update posted on #1" in text
    posts = wait_posted(fake_slack, 2, channel="C0OTHER")
    assert "retrying the invoice run" in posts[-1]  # posted in the incident's own channel
    assert "Incident #1 [P2] billing" in ibot.slash_text("incident status #1", user=VIEWER)
    assert "now P1 (was P2)" in ibot.slash_text("incident severity #1 P1", user=RESPONDER)


async def test_dry_run_declare_changes_nothing(ibot, services, fake_slack):
    ibot.slash_text("dryrun on")
    text = ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    assert "DRY RUN" in text.upper()
    ibot.slash_text("dryrun off")
    assert "There is no open incident in this channel" in ibot.slash_text("incident status", user=VIEWER)
    assert await jobs(services) == []
