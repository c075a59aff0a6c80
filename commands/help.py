"""`help [command]`: the commands, their usage, the role each needs."""

from bot.context import Context
from bot.errors import UsageError
from bot.family import Family
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Text

commands = CommandSet("help")


def _role_text(command) -> str:
    if command.role_note:
        return command.role_note
    return command.role.name if isinstance(command.role, Role) else "varies"


@commands.command("help [command...]", summary="the commands, their usage, the role each needs", role=Role.viewer)
async def show_help(ctx: Context, args: dict) -> Reply:
    families = ctx.services.registry.families()
    wanted = (args.get("command") or "").strip().lower().removeprefix("/revops").strip()
    if wanted:
        first = wanted.split()[0]
        if first not in families:
            raise UsageError(f"no command `{first[:40]}`; `/revops help` lists them", usage="help [command]")
        lines = [Text(Code(f"/revops {c.usage}"), f" — {c.summary} (role: {_role_text(c)})") for c in families[first]]
        return Reply(Text("Help for ", Code(first)), lines=lines)
    lines = []
    for name, group in families.items():
        for c in group:
            lines.append(Text(Code(f"/revops {c.usage}"), f" — {c.summary} ({_role_text(c)})"))
    return Reply(
        "revops — revenue and billing incident runbook",
        lines=lines,
        footer=f"You are {ctx.role.name}. Roles: viewer < responder < approver < admin.",
        more=Text(Code("/revops help <command>"), " for one command"),
    )


# A family that is only commands over the core declares itself with them.
family = Family("help", commands=(commands,), tour=(
    ("U0VIEWER", "/revops help"),
    ("U0RESPONDER", "/revops frobnicate"),  # a typo gets the usage line, never silence
))
