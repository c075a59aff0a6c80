"""An incident's own channel (issue 19 item 5): `incident declare … --channel new` or `[incidents]
channel_per_incident = true` creates #inc-<number>-<stage> (conversations.create, a suffix on
name_taken), invites the declarer and the role holders, sets the topic, posts the initial
communication there and a pointer in the main channel; every later post goes there, commands typed
there find the incident; resolving archives it after `[incidents] archive_after`. A creation Slack
refuses falls back to the main channel with a warning in words. Signed slash commands through bolt,
the scheduler driven by its run/drain hooks on a FakeClock, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from bot.app import build_services
from bot.incidents.channels import channel_name, topic_of
from bot.scheduler import drain, run_due
from tests.incidents.conftest import head, incident, outbox, timeline
from tests.incidents.test_alerts import ALERT, AUTH
from tests.support.harness import CHANNEL, RESPONDER, VIEWER, Bot, flatten, make_settings

COMMS, SCRIBE, RESPONDER2 = "U0COMMS", "U0SCRIBE", "U0RESPONDER2"

CHANNEL_TOML = """
[severity.P1]
ack = "15m"
resolve = "1h"
revenue_update = "30s"
engineering_update = "1h"

[incidents]
archive_after = "1h"
"""


def make_bot(tmp_path, db_url, fake_slack, clock, extra: str = ""):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=CHANNEL_TOML + extra)
    return Bot(settings, fake_slack, clock=clock).start()


@pytest.fixture
def cbot(tmp_path, db_url, fake_slack, clock):
    running = make_bot(tmp_path, db_url, fake_slack, clock)
    yield running
    running.stop()


@pytest.fixture
async def csvc(cbot, clock):
    """The worker's side: its own engine on the bot's database, the same FakeClock."""
    svc = build_services(cbot.settings, clock)
    yield svc
    await svc.db.dispose()


def posts_to(fake_slack, channel: str, containing: str = "") -> list[str]:
    return [text for c in fake_slack.calls_of("chat.postMessage") if c.params.get("channel") == channel
            and containing in (text := flatten(c.params))]


async def test_declare_with_channel_new_runs_the_incident_in_its_own_channel(cbot, csvc, fake_slack, clock):
    text = cbot.slash_text("incident declare P1 checkout conversion down <!channel> --channel new", user=RESPONDER)
    assert "Incident #1 declared (P1, checkout)" in text and "#inc-1-checkout" in text and "being created" in text
    # The declare answered without calling Slack; nothing is posted until the channel exists.
    assert fake_slack.calls_of("conversations.create") == []
    assert not [m for m in await outbox(csvc) if "Incident 1" in head(m)]
    row = await incident(csvc, 1)
    assert (row.own_channel_state, row.home_channel, row.channel) == ("requested", CHANNEL, CHANNEL)

    assert "incident:1:channel" in await drain(csvc)
    [create] = fake_slack.calls_of("conversations.create")
    assert create.params["name"] == "inc-1-checkout"
    new, info = fake_slack.channel_named("inc-1-checkout")
    assert RESPONDER in info["members"]  # the declarer
    # the topic: severity, stage, summary — plain, and a person's <!channel> is no token in it
    assert info["topic"] == "P1 · checkout: conversion down ‹!channel›"
    row = await incident(csvc, 1)
    assert (row.own_channel, row.channel, row.open_channel, row.own_channel_state) == (new, new, new, "ready")

    initial = (await fake_slack.wait("chat.postMessage", where=lambda c: c.params.get("channel") == new))[0]
    assert "[P1] Incident #1: checkout" in flatten(initial.params)
    assert "<!channel>" not in flatten(initial.params)  # the summary is data there too
    pointer = (await fake_slack.wait("chat.postMessage", where=lambda c: c.params.get("channel") == CHANNEL))[0]
    assert f"<#{new}>" in flatten(pointer.params) and "Incident #1" in flatten(pointer.params)
    assert not posts_to(fake_slack, CHANNEL, "[P1] Incident #1")  # the initial communication is not in the main channel
    entries = [e.text for e in await timeline(csvc, 1) if e.kind == "channel"]
    assert entries == [f"Own channel #inc-1-checkout created; invited @{RESPONDER}"]

    # Commands typed in the incident's channel find it; its posts go there.
    assert "Update posted on #1" in cbot.slash_text("incident update failover started", user=RESPONDER, channel=new)
    await fake_slack.wait("chat.postMessage", where=lambda c: c.params.get("channel") == new
                          and "failover started" in flatten(c.params))
    status = cbot.slash_text("incident status", user=VIEWER, channel=new)
    assert "Incident #1 [P1] checkout" in status
    # Typed in the main channel, a command says where the incident went.
    moved = cbot.slash_text("incident update still down", user=RESPONDER)
    assert "running in its own channel" in moved and f"#1 in <#{new}>" in moved
    # The main channel is free for another incident.
    assert "Incident #2 declared" in cbot.slash_text("incident declare P2 billing invoices stuck", user=RESPONDER)

    # A cadence post lands in the incident's channel.
    clock.advance(timedelta(seconds=31))
    assert "incident:1:revenue_update" in await run_due(csvc)
    revenue = [m for m in await outbox(csvc) if "Revenue-team update" in head(m) and "#1" in str(m.reply)]
    assert revenue and {m.channel for m in revenue} == {new}

    # Whoever is given a role later is invited.
    assert "communications lead" in cbot.slash_text(f"incident role comms <@{COMMS}|casey>", user=RESPONDER,
                                                    channel=new)
    assert "incident:1:invite:U0COMMS" in await drain(csvc)
    invites = [c.params for c in fake_slack.calls_of("conversations.invite")]
    assert {"channel": new, "users": COMMS} in [{"channel": p["channel"], "users": p["users"]} for p in invites]
    assert COMMS in fake_slack.channel_named("inc-1-checkout")[1]["members"]

    # A new severity is in its topic.
    assert "is now P2" in cbot.slash_text("incident severity P2", user=RESPONDER, channel=new)
    assert "incident:1:topic" in await drain(csvc)
    assert fake_slack.channel_named("inc-1-checkout")[1]["topic"] == "P2 · checkout: conversion down ‹!channel›"

    # Resolving archives it `archive_after` later, and not before.
    assert "resolved" in cbot.slash_text("incident resolve a bad deploy", user=RESPONDER, channel=new)
    await fake_slack.wait("chat.postMessage", where=lambda c: c.params.get("channel") == new
                          and "resolved" in flatten(c.params).lower())
    clock.advance(timedelta(minutes=59))
    assert "incident:1:archive" not in await drain(csvc)
    assert fake_slack.calls_of("conversations.archive") == []
    clock.advance(timedelta(minutes=1))
    assert "incident:1:archive" in await drain(csvc)
    assert [c.params["channel"] for c in fake_slack.calls_of("conversations.archive")] == [new]
    assert fake_slack.channel_named("inc-1-checkout")[1]["archived"] is True
    row = await incident(csvc, 1)
    assert row.own_channel_state == "archived" and row.archived_at == clock.now()
    assert "Archived the incident's own channel" in [e.text for e in await timeline(csvc, 1)]


@pytest.mark.parametrize("error", ["missing_scope", "restricted_action"])
async def test_a_creation_slack_refuses_falls_back_to_the_main_channel_with_a_warning(cbot, csvc, fake_slack,
                                                                                      error):
    fake_slack.fail("conversations.create", status=200, error=error)
    cbot.slash_text("incident declare P1 checkout conversion down --channel new", user=RESPONDER)
    await drain(csvc)
    row = await incident(csvc, 1)
    assert (row.own_channel_state, row.own_channel, row.channel, row.open_channel) == ("failed", None, CHANNEL, CHANNEL)
    await fake_slack.wait("chat.postMessage", count=2, where=lambda c: c.params.get("channel") == CHANNEL)
    initial, warning = posts_to(fake_slack, CHANNEL)
    assert "[P1] Incident #1: checkout" in initial
    assert "could not get its own channel" in warning and f"Slack said {error}" in warning
    assert ("channels:manage" if error == "missing_scope" else "does not let the app create channels") in warning
    assert "Traceback" not in fake_slack.everything_sent()
    # nothing half-done: no invite, no topic, and the job does not run again
    assert fake_slack.calls_of("conversations.invite") == [] and fake_slack.calls_of("conversations.setTopic") == []
    assert "incident:1:channel" not in await drain(csvc)
    assert [e.text for e in await timeline(csvc, 1) if e.kind == "channel"][0].startswith(f"No own channel: Slack said {error}")
    # the incident works where it was declared
    assert "Update posted on #1" in cbot.slash_text("incident update still down", user=RESPONDER)


async def test_a_taken_name_gets_a_suffix_and_slack_down_is_tried_again(cbot, csvc, fake_slack, clock):
    fake_slack.channels["C0TAKEN"] = {"name": "inc-1-checkout", "members": set(), "topic": "", "archived": True}
    fake_slack.fail("conversations.create", status=500, times=3)  # the client's own retries, then the job's
    cbot.slash_text("incident declare P1 checkout conversion down --channel new", user=RESPONDER)
    await drain(csvc)
    assert (await incident(csvc, 1)).own_channel_state == "requested"  # not given up on: tried again later
    clock.advance(timedelta(seconds=30))
    assert "incident:1:channel" in await drain(csvc)
    assert [c.params["name"] for c in fake_slack.calls_of("conversations.create")][-2:] == [
        "inc-1-checkout", "inc-1-checkout-2"]
    row = await incident(csvc, 1)
    assert row.own_channel_state == "ready" and fake_slack.channel_named("inc-1-checkout-2")[0] == row.channel


async def test_channel_per_incident_makes_one_without_the_flag_and_here_opts_out(tmp_path, db_url, fake_slack,
                                                                                 clock):
    running = make_bot(tmp_path, db_url, fake_slack, clock, extra="channel_per_incident = true\n")
    svc = build_services(running.settings, clock)
    try:
        assert "being created" in running.slash_text("incident declare P2 billing invoices stuck", user=RESPONDER)
        await drain(svc)
        assert fake_slack.channel_named("inc-1-billing") is not None
        assert (await incident(svc, 1)).own_channel_state == "ready"
        # whoever acknowledges (from anywhere, with #ID) is invited too
        assert "incident commander of #1" in running.slash_text("incident ack #1", user=RESPONDER2)
        assert "incident:1:invite:U0RESPONDER2" in await drain(svc)
        assert RESPONDER2 in fake_slack.channel_named("inc-1-billing")[1]["members"]
        text = running.slash_text("incident declare P3 signup slow form --channel here", user=RESPONDER)
        assert "the initial communication is posted in" in text
        await drain(svc)
        assert [c.params["name"] for c in fake_slack.calls_of("conversations.create")] == ["inc-1-billing"]
        assert (await incident(svc, 2)).own_channel_state is None
    finally:
        await svc.db.dispose()
        running.stop()


async def test_an_alert_declared_incident_gets_its_channel_and_slack_refusals_after_creation_are_warnings(
        tmp_path, db_url, fake_slack, clock):
    running = make_bot(tmp_path, db_url, fake_slack, clock, extra="channel_per_incident = true\n")
    svc = build_services(running.settings, clock)
    try:
        alert_id = running.http.post("/alerts", json=ALERT, headers=AUTH).json()["id"]
        running.click_and_wait("revops:incident.alert_ack", str(alert_id), user=RESPONDER2)
        running.click_and_wait("revops:incident.alert_declare", str(alert_id), user=RESPONDER)
        fake_slack.fail("conversations.invite", status=200, error="user_not_found")  # the declarer's invite
        fake_slack.fail("conversations.setTopic", status=200, error="too_long")
        await drain(svc)
        row = await incident(svc, 1)
        new, info = fake_slack.channel_named("inc-1-checkout")
        assert (row.channel, row.own_channel_state, row.commander) == (new, "ready", RESPONDER2)
        assert RESPONDER2 in info["members"] and RESPONDER not in info["members"]  # the commander is invited
        await fake_slack.wait("chat.postMessage", count=3, where=lambda c: c.params.get("channel") == new)
        initial, *warnings = posts_to(fake_slack, new)
        assert "[P1] Incident #1: checkout" in initial
        assert any(f"Could not invite <@{RESPONDER}>" in w and "user_not_found" in w for w in warnings)
        assert any("Could not set this channel's topic (Slack said too_long)" in w for w in warnings)
        await fake_slack.wait("chat.postMessage", where=lambda c: c.params.get("channel") == CHANNEL
                              and f"<#{new}>" in flatten(c.params))
    finally:
        await svc.db.dispose()
        running.stop()


def test_a_bad_channel_option_gets_the_usage_line(cbot):
    text = cbot.slash_text("incident declare P1 checkout down --channel private", user=RESPONDER)
    assert "--channel" in text and "new" in text and "Usage" in text and "declared" not in text


def test_names_and_topics_are_what_slack_takes():
    assert channel_name(7, "Checkout") == "inc-7-checkout"
    assert channel_name(7, "Pay Ment/EU.west!") == "inc-7-pay-ment-eu-west"
    assert channel_name(7, "Zahlungsüberprüfung", 3) == "inc-7-zahlungsuberprufung-3"
    assert channel_name(7, "***") == "inc-7"
    long = channel_name(123456, "x" * 100, 9)
    assert len(long) == 80 and long.startswith("inc-123456-x") and long.endswith("-9")
    topic = topic_of(SimpleNamespace(severity="P1", stage="checkout", summary="<@U0X> " + "word " * 100))
    assert len(topic) <= 250 and topic.startswith("P1 · checkout: ‹@U0X› word") and topic.endswith("…")
    assert "\n" not in topic_of(SimpleNamespace(severity="P2", stage="s", summary="two\nlines"))
