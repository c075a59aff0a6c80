"""Incident roles (issue 19 item 4): `incident role <commander|comms|scribe> @user [#ID]`, the
holder's checklist by DM, the roles in status, report, page and timeline."""

from __future__ import annotations

from tests.incidents.conftest import incident, timeline
from tests.incidents.test_web import link_of
from tests.support.harness import CHANNEL, RESPONDER, VIEWER, flatten

COMMS, SCRIBE = "U0COMMS", "U0SCRIBE"


def dms(fake_slack, user: str) -> list[str]:
    return [flatten(c.params) for c in fake_slack.calls_of("chat.postMessage") if c.params.get("channel") == user]


async def test_roles_are_given_announced_briefed_and_shown(ibot, services, fake_slack):
    assert "Incident #1 declared" in ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    # Slack sends a mention escaped (should_escape: true); by hand it is @ID
    text = ibot.slash_text(f"incident role comms <@{COMMS}|casey>", user=RESPONDER)
    assert "is now the communications lead of incident #1" in text and "checklist is on its way by DM" in text
    fake_slack.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == COMMS)
    brief = dms(fake_slack, COMMS)[0]
    assert "You are the communications lead of incident #1" in brief and "/revops incident update" in brief
    announced = fake_slack.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == CHANNEL
                                    and "communications lead" in flatten(c.params))
    assert f"<@{COMMS}> is now the communications lead" in flatten(announced[0].params)

    assert "scribe of incident #1" in ibot.slash_text(f"incident role scribe @{SCRIBE} #1", user=RESPONDER)
    # the commander named before anyone acknowledged: escalation goes on until an ack
    text = ibot.slash_text(f"incident role commander @{RESPONDER}", user=RESPONDER)
    assert "not acknowledged yet" in text
    row = await incident(services, 1)
    assert (row.commander, row.comms, row.scribe, row.acknowledged_at) == (RESPONDER, COMMS, SCRIBE, None)
    fake_slack.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == SCRIBE)
    assert "You are the scribe of incident #1" in dms(fake_slack, SCRIBE)[0]

    status = ibot.slash_text("incident status", user=VIEWER)
    assert "Communications lead" in status and f"<@{COMMS}>" in status
    assert "Scribe" in status and f"<@{SCRIBE}>" in status
    entries = [e for e in await timeline(services, 1) if e.kind == "role"]
    assert [e.text for e in entries] == [f"Communications lead: @{COMMS}", f"Scribe: @{SCRIBE}",
                                         f"Incident commander: @{RESPONDER}"]
    assert all(e.actor == RESPONDER for e in entries)

    # a new holder replaces the old one; the same holder twice is refused in words
    assert "already the communications lead" in ibot.slash_text(f"incident role comms @{COMMS}", user=RESPONDER)
    ibot.slash_text(f"incident role comms @{SCRIBE}", user=RESPONDER)
    assert (await incident(services, 1)).comms == SCRIBE
    assert f"Communications lead: @{SCRIBE} (was @{COMMS})" in [e.text for e in await timeline(services, 1)]

    report = ibot.slash_text("incident report", user=VIEWER)
    assert "Roles:" in report and "communications lead" in report and "scribe" in report


async def test_the_acknowledger_gets_the_commanders_checklist(ibot, fake_slack):
    ibot.slash_text("incident declare P2 billing invoices stuck", user=RESPONDER)
    ibot.slash_text("incident ack", user=RESPONDER)
    fake_slack.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == RESPONDER)
    brief = dms(fake_slack, RESPONDER)[0]
    assert "You are the incident commander of incident #1" in brief and "named by" not in brief


async def test_bad_role_input_gets_the_usage_line_and_changes_nothing(ibot, services):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    text = ibot.slash_text("incident role chef @U0X", user=RESPONDER)
    assert "expected one of commander, comms, scribe" in text and "incident role" in text
    text = ibot.slash_text("incident role comms ada", user=RESPONDER)
    assert "expected a person as @name" in text
    assert "needs the responder role" in ibot.slash_text(f"incident role comms @{COMMS}", user=VIEWER)
    row = await incident(services, 1)
    assert (row.comms, row.scribe) == (None, None)
    assert not [e for e in await timeline(services, 1) if e.kind == "role"]
    ibot.slash_text("incident resolve a bad deploy", user=RESPONDER)
    assert "already resolved" in ibot.slash_text(f"incident role comms @{COMMS} #1", user=RESPONDER)


def test_the_page_shows_the_roles(ibot):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    ibot.slash_text(f"incident role comms @{COMMS}", user=RESPONDER)
    page = ibot.http.get(link_of(ibot))
    assert page.status_code == 200
    assert "Communications lead" in page.text and COMMS in page.text
