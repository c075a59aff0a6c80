"""Roles enforced in one place, dry-run and panic (SPEC §6), /flags."""

import asyncio

import pytest
from sqlalchemy import select

from bot.models import AuditRecord, OutgoingMessage
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.models import ConsoleButton
from tests.support.harness import ADMIN, ADMIN_KEY, APPROVER, CHANNEL, RESPONDER, VIEWER, flatten


async def records(bot, **where):
    async with bot.db() as db, db.transaction() as s:
        query = select(AuditRecord).order_by(AuditRecord.id)
        for key, value in where.items():
            query = query.where(getattr(AuditRecord, key) == value)
        return (await s.execute(query)).scalars().all()


DENIALS = [
    (VIEWER, "dryrun on", "admin", "viewer"),
    (RESPONDER, "dryrun off", "admin", "responder"),
    (APPROVER, "dryrun on", "admin", "approver"),
    (VIEWER, "panic on", "admin", "viewer"),
    (APPROVER, "panic off", "admin", "approver"),
    (VIEWER, "audit", "approver", "viewer"),
    (RESPONDER, "audit @U0ADMIN", "approver", "responder"),
]


@pytest.mark.parametrize("user,text,needed,actual", DENIALS)
async def test_every_denial_answers_privately_with_the_role_and_is_audited(bot, user, text, needed, actual):
    r = bot.slash(text, user=user)
    payload = r.json()
    assert payload["response_type"] == "ephemeral"
    answer = flatten(payload)
    assert f"needs the {needed} role; you are {actual}" in answer
    denied = await records(bot, outcome="denied")
    assert len(denied) == 1
    assert denied[0].actor == user and denied[0].command == text.split()[0]
    assert denied[0].channel == CHANNEL
    assert "Dry-run is off, panic is off" in bot.slash_text("dryrun status", user=VIEWER)


def test_viewers_can_read_the_flags(bot):
    assert "Dry-run is off, panic is off" in bot.slash_text("panic status", user=VIEWER)
    assert "Dry-run is off, panic is off" in bot.slash_text("dryrun", user=VIEWER)


async def test_dryrun_toggle_is_audited_announced_and_visible_at_flags(bot, fake_slack):
    r = bot.slash("dryrun on", user=ADMIN)
    assert r.json()["response_type"] == "in_channel"
    assert "Dry-run is now on" in flatten(r.json())
    flags = bot.admin_get("/flags").json()
    assert flags["dry_run"] is True and flags["panic"] is False
    assert flags["updated_by"] == ADMIN and flags["updated_at"]
    posts = await bot.wait_posts(1)
    assert posts[0].params["channel"] == "C0INCIDENT"
    assert "Dry-run turned on by <@U0ADMIN>" in posts[0].params["text"].replace("*", "")
    rec = (await records(bot, command="dryrun"))[-1]
    assert rec.outcome == "ok" and rec.actor == ADMIN and rec.args == {"choice": "on"}
    assert "already on" in bot.slash_text("dryrun on", user=ADMIN)
    assert "Dry-run is now off" in bot.slash_text("dryrun off", user=ADMIN)
    assert bot.admin_get("/flags").json()["dry_run"] is False


async def test_panic_needs_a_confirm_click_by_an_admin(bot, fake_slack):
    r = bot.slash("panic on", user=ADMIN)
    payload = r.json()
    assert payload["response_type"] == "ephemeral"
    buttons = [e for b in payload["blocks"] if b["type"] == "actions" for e in b["elements"]]
    confirm = next(b for b in buttons if b["action_id"] == "revops:flags.panic_confirm")
    assert confirm["style"] == "danger" and "confirm" in confirm
    assert bot.admin_get("/flags").json()["panic"] is False  # not before the click

    # The clicker's role is checked again at click time.
    answer = bot.click_and_wait(confirm["action_id"], confirm["value"], user=RESPONDER)
    assert "needs the admin role; you are responder" in flatten(answer)
    assert answer.get("replace_original") is False
    assert bot.admin_get("/flags").json()["panic"] is False
    assert (await records(bot, command="flags.panic_confirm"))[-1].outcome == "denied"

    answer = bot.click_and_wait(confirm["action_id"], confirm["value"], user=ADMIN)
    assert "Panic mode is now on" in flatten(answer)
    assert answer.get("replace_original") is True
    flags = bot.admin_get("/flags").json()
    assert flags["panic"] is True and flags["updated_by"] == ADMIN
    posts = await bot.wait_posts(1)
    assert "Panic mode turned on" in posts[-1].params["text"].replace("*", "")

    # A second click (or a replayed request) changes nothing and says so.
    answer = bot.click_and_wait(confirm["action_id"], confirm["value"], user=ADMIN)
    assert "already on" in flatten(answer)
    assert [r.outcome for r in await records(bot, command="flags.panic_confirm")] == ["denied", "ok", "failed"]
    assert "Panic mode is now off" in bot.slash_text("panic off", user=ADMIN)


async def test_panic_cancel_leaves_it_off(bot):
    answer = bot.click_and_wait("revops:flags.panic_cancel", "cancel", user=ADMIN)
    assert "left off" in flatten(answer)
    assert bot.admin_get("/flags").json()["panic"] is False


async def test_dry_run_is_applied_by_the_router_to_any_mutating_command(bot, fake_slack):
    """A mutating command that knows nothing of dry-run changes nothing while it is on."""
    family = CommandSet("scribble")

    @family.command("scribble <word>", summary="writes a row", role=Role.responder, mutating=True)
    async def scribble(ctx, args):
        ctx.session.add(ConsoleButton(number=900 + len(args["word"]), action_id="x", value=args["word"],
                                      label="x", channel="C", created_at=ctx.now))
        ctx.post("C0OTHER", Reply(f"scribbled {args['word']}"))
        ctx.note(subject="scribble", detail=f"wrote {args['word']}")
        return Reply(f"wrote {args['word']}", private=False)

    bot.runtime.services.registry.add(family)
    bot.slash_text("dryrun on", user=ADMIN)
    text = bot.slash_text("scribble hello", user=RESPONDER)
    assert "[DRY RUN]" in text and "wrote hello" in text
    async with bot.db() as db, db.transaction() as s:
        assert (await s.execute(select(ConsoleButton))).scalars().all() == []
        post = (await s.execute(select(OutgoingMessage).where(OutgoingMessage.channel == "C0OTHER"))).scalar_one()
        assert post.reply["tag"] == "dry run"
    rec = (await records(bot, command="scribble"))[-1]
    assert rec.outcome == "dry_run" and rec.detail == "wrote hello"

    bot.slash_text("dryrun off", user=ADMIN)
    text = bot.slash_text("scribble world", user=RESPONDER)
    assert "DRY RUN" not in text
    async with bot.db() as db, db.transaction() as s:
        rows = (await s.execute(select(ConsoleButton))).scalars().all()
    assert [r.value for r in rows] == ["world"]
    assert (await records(bot, command="scribble"))[-1].outcome == "ok"


async def test_a_failing_command_leaves_no_half_done_change(bot):
    family = CommandSet("halfway")

    @family.command("halfway", summary="fails after writing", role=Role.responder, mutating=True)
    async def halfway(ctx, args):
        ctx.session.add(ConsoleButton(number=777, action_id="x", value="v", label="x", channel="C",
                                      created_at=ctx.now))
        await ctx.session.flush()
        raise RuntimeError("boom with internals")

    bot.runtime.services.registry.add(family)
    text = bot.slash_text("halfway", user=RESPONDER)
    assert "failed unexpectedly; nothing was changed" in text
    assert "boom" not in text and "Traceback" not in text
    async with bot.db() as db, db.transaction() as s:
        assert (await s.execute(select(ConsoleButton))).scalars().all() == []
    assert (await records(bot, command="halfway"))[-1].outcome == "failed"


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic " + ADMIN_KEY, "Bearer"])
def test_flags_endpoint_needs_the_admin_key(bot, header):
    headers = {"Authorization": header} if header else {}
    r = bot.http.get("/flags", headers=headers)
    assert r.status_code == 401
    assert ADMIN_KEY not in r.text
