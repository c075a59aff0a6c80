"""The timeline records runbook actions run in the incident's channel, at the
router's one recording point (no command writes it itself)."""

from __future__ import annotations

import asyncio
import re

from bot.billing import ledger
from bot.incidents import timeline as timeline_module
from bot.registry import CommandSet
from bot.reply import Button, Reply
from bot.roles import Role
from bot.text import Text, User
from bot.router import Router
from tests.incidents.conftest import timeline
from tests.support.harness import ADMIN, APPROVER, CHANNEL, RESPONDER, VIEWER


def install_grant_family(bot) -> None:
    """A stand-in `grant` family (the real one belongs to the grants issue): the recorder
    knows nothing about it, which is the point."""
    family = CommandSet("granttest")

    @family.command("grant <account> <amount:int> <reason...>", summary="test grant", role=Role.responder,
                    mutating=True)
    async def grant(ctx, args):
        return Reply(f"Grant of {args['amount']} credits to {args['account']} awaits approval",
                     buttons=[Button("Approve", "granttest.approve", "7")])

    @family.action("approve", role=Role.approver)
    async def approve(ctx, value):
        return Reply(Text(f"Grant {value} approved by ", User(ctx.actor), "; balance 150"), replace=True)

    registry = bot.runtime.services.registry
    registry.commands[:0] = family.commands  # ahead of any real `grant`
    for action in family.actions:
        registry.actions[action.name] = action


async def test_grant_and_flags_in_the_channel_land_on_the_timeline(ibot, services):
    install_grant_family(ibot)
    ibot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER)
    ibot.slash_text("incident declare P3 search slow results", user=RESPONDER, channel="C0ELSEWHERE")

    assert "awaits approval" in ibot.slash_text("grant acct_42 50 goodwill for the outage", user=RESPONDER)
    answer = ibot.click_and_wait("revops:granttest.approve", "7", user=APPROVER)
    assert "approved" in str(answer)
    ibot.slash_text("help", user=VIEWER)  # not a runbook action: not recorded
    ibot.slash_text("grant acct_9 5 elsewhere", user=RESPONDER, channel="C0NOINCIDENT")  # no incident there
    ibot.slash_text("dryrun on", user=ADMIN, channel="C0NOINCIDENT")  # flags: on every open incident
    ibot.slash_text("dryrun off", user=ADMIN, channel="C0NOINCIDENT")

    entries = await timeline(services, 1)
    kinds = [(e.kind, e.actor) for e in entries]
    assert kinds == [("declare", RESPONDER), ("action", RESPONDER), ("action", APPROVER), ("flags", ADMIN),
                     ("flags", ADMIN)]
    grant_entry, click_entry = entries[1], entries[2]
    assert grant_entry.text == "grant acct_42 50 goodwill for the outage: Grant of 50 credits to acct_42 awaits approval"
    assert grant_entry.data["command"] == "grant" and grant_entry.data["args"]["amount"] == 50
    # stored text is plain data: the approver by id, never a <@…> token
    assert click_entry.text.startswith("clicked granttest.approve: Grant 7 approved by @U0APPROVER")
    assert not any("<@" in e.text for e in entries)
    assert "acct_9" not in str([e.text for e in entries])
    assert [e.kind for e in await timeline(services, 2)] == ["declare", "flags", "flags"]

    shown = ibot.slash_text("incident timeline", user=VIEWER)
    assert "@U0RESPONDER  grant acct_42 50 goodwill for the outage: Grant of 50 credits" in shown
    assert "<@U0RESPONDER>" not in shown  # a timeline names people, it pings nobody
    assert "dryrun on" in shown


async def test_actions_after_resolution_are_not_recorded(ibot, services):
    install_grant_family(ibot)
    ibot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER)
    ibot.slash_text("incident resolve bad deploy", user=RESPONDER)
    ibot.slash_text("grant acct_42 50 late", user=RESPONDER, channel=CHANNEL)
    assert [e.kind for e in await timeline(services, 1)] == ["declare", "resolve"]


async def test_lookups_in_the_channel_land_on_the_timeline(ibot, services):
    """A read runs in a read unit (no write lock); its timeline line is written afterwards, in one
    short transaction of its own (router.py `_record_afterwards`)."""
    ibot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER)
    async with services.db.transaction() as s:
        await ledger.ensure_account(s, "acct_7", email="ada@example.com", at=services.clock.now())
    router = Router(services)
    outcomes = await asyncio.gather(
        *(router.handle_text("credits acct_7", actor=VIEWER, channel=CHANNEL, surface="slack") for _ in range(6)),
        router.handle_text("credits ada@example.com", actor=VIEWER, channel="C0ELSEWHERE", surface="slack"))
    assert [o.outcome for o in outcomes] == ["ok"] * 7
    entries = await timeline(services, 1)
    assert [e.kind for e in entries] == ["declare"] + ["action"] * 6
    # "credits acct_7" then the reply's plain reading (the credits family's own wording)
    assert len({e.text for e in entries[1:]}) == 1
    assert re.fullmatch(r"credits acct_7: Account `?acct_7`?: \*?0\*? credits", entries[1].text), entries[1].text
    assert all(e.actor == VIEWER and e.data["command"] == "credits" for e in entries[1:])
    # The same through Slack (a signed request over HTTP): answered, and recorded before the answer.
    assert "Account acct_7: 0 credits" in ibot.slash_text("credits acct_7", user=VIEWER)
    assert [e.kind for e in await timeline(services, 1)] == ["declare"] + ["action"] * 7


async def test_a_record_that_fails_fails_alone(ibot, services, monkeypatch):
    ibot.slash_text("incident declare P2 billing invoices failing", user=RESPONDER)
    ibot.slash_text("incident declare P3 search slow results", user=RESPONDER, channel="C0OTHER")
    async with services.db.transaction() as s:
        await ledger.ensure_account(s, "acct_7", at=services.clock.now())
    real = timeline_module.service.write_entries_in

    async def failing_for_other(session, channel, **kwargs):
        if channel == "C0OTHER":
            raise ValueError("broken recorder")
        return await real(session, channel, **kwargs)

    monkeypatch.setattr(timeline_module.service, "write_entries_in", failing_for_other)
    router = Router(services)
    outcomes = await asyncio.gather(*(
        router.handle_text("credits acct_7", actor=VIEWER, channel=channel, surface="slack")
        for channel in (CHANNEL, "C0OTHER", CHANNEL)))
    assert [o.outcome for o in outcomes] == ["ok", "error", "ok"]
    assert "failed unexpectedly" in outcomes[1].reply.text
    assert [e.kind for e in await timeline(services, 1)] == ["declare", "action", "action"]
    assert [e.kind for e in await timeline(services, 2)] == ["declare"]
