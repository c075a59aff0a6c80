"""`audit [account|@user] [--since 24h]`: the audit log, filtered, and whether its chain verifies."""

from datetime import timedelta

from bot import audit as audit_log
from bot.context import Context
from bot.family import Family
from bot.grammar import as_user
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Em, Status, Text, User, clip

commands = CommandSet("audit")

@commands.command("audit [target] [--since DURATION] [--limit N]", summary="the audit log, filtered by account or @user",
                  role=Role.approver)
async def show_audit(ctx: Context, args: dict) -> Reply:
    target = args.get("target")
    since: timedelta = args.get("since", timedelta(hours=24))
    limit = max(1, min(args.get("limit", 20), 100))
    actor = subject = None
    if target:
        actor = as_user(target)
        if actor is None:
            subject = target
    # An account by any of its names (id, cus_…, email): the families' aliases providers know them.
    names = await ctx.services.names_of(ctx.session, subject) if subject else None
    records = await audit_log.search(ctx.session, actor=actor, subjects=names, since=ctx.now - since, limit=limit)
    check = await audit_log.verify(ctx.session)
    head = f"Audit log ({'@' + actor if actor else subject or 'everything'}, last {int(since.total_seconds() // 3600) or 1}h)"
    lines = [
        # ephemeral: a mention there notifies nobody, and Slack shows the name
        Text(f"#{r.id} {r.at:%Y-%m-%d %H:%M:%S} ", User(r.actor), " ", Code(r.command), " ",
             clip(_args(r.args), 300), " → ", Em(r.outcome), (" — " + clip(r.detail, 300)) if r.detail else "")
        for r in records
    ] or ["No records match."]
    status = Status("ok" if check.ok else "failed")
    more = None if len(records) < limit else Text("narrow it with an account, ", Code("@user"), " or ",
                                                  Code("--since"), ", or raise ", Code("--limit"), " (up to 100)")
    return Reply(head, lines=lines, footer=Text(status, " ", check.sentence()), more=more)


def _args(args: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items()) if args else ""


family = Family("audit", commands=(commands,), tour=(("U0APPROVER", "/revops audit"),))
