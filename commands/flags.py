"""`dryrun on|off|status`, `panic on|off|status` (SPEC §6).

Admins change them, anyone reads them; `panic on` takes effect only after a
confirm click. Every toggle is audited (by the router) and announced in the
incident channel.
"""

from bot.context import Context
from bot.errors import Conflict
from bot.family import Family
from bot.flags import read_flags, set_flag
from bot.registry import CommandSet
from bot.reply import Button, Reply
from bot.roles import Role
from bot.text import Em, Icon, Text, User

commands = CommandSet("flags")

_ROLE_NOTE = "admin; status: viewer"


def _changing(args: dict) -> bool:
    return args.get("choice") in ("on", "off")


def _role(args: dict) -> Role:
    return Role.admin if _changing(args) else Role.viewer


def _status_reply(flags) -> Reply:
    who = (Text(" (last changed by ", User(flags.updated_by), f" at {flags.updated_at:%Y-%m-%d %H:%M} UTC)")
           if flags.updated_by else "")
    return Reply(
        Text("Dry-run is ", Em("on" if flags.dry_run else "off"), ", panic is ", Em("on" if flags.panic else "off"),
             who, "."),
        fields=[("dry-run", "on" if flags.dry_run else "off"), ("panic", "on" if flags.panic else "off")],
    )


async def _toggle(ctx: Context, name: str, value: bool) -> Reply:
    label = {"dry_run": "Dry-run", "panic": "Panic mode"}[name]
    state = "on" if value else "off"
    changed = await set_flag(ctx.session, name, value, actor=ctx.actor, at=ctx.now)
    ctx.note(subject=name, detail=f"{name} -> {state}" + ("" if changed else " (unchanged)"))
    if not changed:
        return Reply(f"{label} was already {state}.")
    what = {
        ("dry_run", True): "mutating actions are simulated and change nothing",
        ("dry_run", False): "actions take effect again",
        ("panic", True): "automation is paused: no auto-posted updates, escalations or automatic replays",
        ("panic", False): "automation resumes",
    }[(name, value)]
    ctx.post(ctx.settings.cfg.slack.incident_channel,
             Reply(Text(Icon("rotating_light"), f" {label} turned ", Em(state), " by ", User(ctx.actor), f": {what}.")))
    return Reply(Text(f"{label} is now ", Em(state), f": {what}."), private=False)


@commands.command("dryrun [on|off|status]", summary="simulate every mutating action (on), or not (off)",
                  role=_role, mutating=_changing, dry_run="exempt", role_note=_ROLE_NOTE)
async def dryrun(ctx: Context, args: dict) -> Reply:
    choice = args.get("choice", "status")
    if choice == "status":
        return _status_reply(await ctx.current_flags())
    return await _toggle(ctx, "dry_run", choice == "on")


@commands.command("panic [on|off|status]", summary="pause all automation (asks for a confirm click)",
                  role=_role, mutating=_changing, dry_run="exempt", role_note=_ROLE_NOTE)
async def panic(ctx: Context, args: dict) -> Reply:
    choice = args.get("choice", "status")
    if choice == "status":
        return _status_reply(await ctx.current_flags())
    if choice == "off":
        return await _toggle(ctx, "panic", False)
    if ctx.flags.panic:
        return Reply("Panic mode was already on.")
    ctx.note(subject="panic", detail="confirm requested")
    return Reply(
        Text(Icon("rotating_light"), " Turn panic mode on? Auto-posted updates, escalations and automatic replays stop "
        "until someone turns it off."),
        buttons=[
            Button("Turn panic on", "flags.panic_confirm", "on", style="danger",
                   confirm="Pause all automation now?"),
            Button("Cancel", "flags.panic_cancel", "cancel"),
        ],
    )


@commands.action("panic_confirm", role=Role.admin, dry_run="exempt")
async def confirm_panic(ctx: Context, value: str) -> Reply:
    flags = await read_flags(ctx.session)
    if flags.panic:
        raise Conflict("Panic mode was already on.")
    reply = await _toggle(ctx, "panic", True)
    reply.replace = True
    return reply


@commands.action("panic_cancel", role=Role.admin, mutating=False)
async def cancel_panic(ctx: Context, value: str) -> Reply:
    return Reply("Panic mode left off.", replace=True)


family = Family("flags", commands=(commands,), tour=(
    ("U0VIEWER", "/revops dryrun on"),  # only an admin may
    ("U0ADMIN", "/revops dryrun on"),
    ("U0ADMIN", "/revops dryrun status"),
    ("U0ADMIN", "/revops dryrun off"),
    ("U0ADMIN", "/revops panic on"),
    ("U0ADMIN", "click 1"),  # the confirm
    ("U0VIEWER", "/revops panic status"),
    ("U0ADMIN", "/revops panic off"),
))
