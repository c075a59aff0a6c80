"""`audit [account|@user] [--since 24h]`: the audit log, filtered, and whether its chain verifies."""

import re
from datetime import timedelta

from bot import audit as audit_log
from bot.context import Context
from bot.family import Family
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role

commands = CommandSet("audit")

_MENTION = re.compile(r"^<@([A-Z0-9]+)(?:\|[^>]*)?>$|^@([A-Z0-9]+)$")


@commands.command("audit [target] [--since DURATION] [--limit N]", summary="the audit log, filtered by account or @user",
                  role=Role.approver)
async def show_audit(ctx: Context, args: dict) -> Reply:
    target = args.get("target")
    since: timedelta = args.get("since", timedelta(hours=24))
    limit = max(1, min(args.get("limit", 20), 100))
    actor = subject = None
    if target:
        match = _MENTION.match(target)
        if match:
            actor = match.group(1) or match.group(2)
        else:
            subject = target
    records = await audit_log.search(ctx.session, actor=actor, subject=subject, since=ctx.now - since, limit=limit)
    check = await audit_log.verify(ctx.session)
    head = f"Audit log ({'@' + actor if actor else subject or 'everything'}, last {int(since.total_seconds() // 3600) or 1}h)"
    lines = [
        f"#{r.id} {r.at:%Y-%m-%d %H:%M:%S} <@{r.actor}> `{r.command}` {_args(r.args)} → *{r.outcome}*"
        + (f" — {r.detail}" if r.detail else "")
        for r in records
    ] or ["No records match."]
    icon = ":white_check_mark:" if check.ok else ":x:"
    return Reply(head, lines=lines, footer=f"{icon} {check.sentence()}")


def _args(args: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items()) if args else ""


family = Family("audit", commands=(commands,), tour=(("U0APPROVER", "/revops audit"),))
