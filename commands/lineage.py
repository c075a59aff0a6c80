"""`lineage [--since 24h]`: the finance lineage invariants of revops.toml (`[[invariants]]`,
bot/billing/lineage.py): per invariant how many applied events were checked, passed and
violated, the last violation with the id to `trace`, and the invariants that saw no event in
the window (the B2B runbook's "revenue events missing")."""

from datetime import timedelta

from bot.billing import lineage as billing_lineage
from bot.context import Context
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Em, Status, Text, clip

from ._billing import window

commands = CommandSet("lineage")


@commands.command("lineage [--since DURATION]",
                  summary="the finance invariants: checked, passed, violated, last violation, silent invariants",
                  role=Role.viewer, examples=["lineage", "lineage --since 7d"])
async def show_lineage(ctx: Context, args: dict) -> Reply:
    since: timedelta = args.get("since", timedelta(hours=24))
    invariants = ctx.settings.cfg.invariants
    if not invariants:
        return Reply("Finance lineage: no invariants configured",
                     lines=[Text("Add ", Code("[[invariants]]"), " to revops.toml (see revops.example.toml): a name, "
                                 "the event types, a field path and a rule.")])
    found = await billing_lineage.summary(ctx.session, invariants, since=ctx.now - since)
    lines: list = []
    for item in found:
        level = "failed" if item.violated else "warning" if not item.checked else "ok"
        lines.append(Text(Status(level), " ", Em(item.name), f": {item.checked} checked, {item.passed} passed, "
                          f"{item.violated} violated ({', '.join(item.events)})"))
        if item.last_event_id:
            lines.append(Text(f"    last violation {item.last_at:%Y-%m-%d %H:%M:%S}: ", clip(item.last_detail or "", 300),
                              " — ", Code(f"trace {item.last_event_id}")))
        if not item.checked:
            seen = f" (last checked {item.last_seen:%Y-%m-%d %H:%M})" if item.last_seen else " (never checked)"
            lines.append(Text(f"    no events for invariant {item.name} in the last {window(since)}{seen}"))
    violated = sum(1 for item in found if item.violated)
    silent = sum(1 for item in found if not item.checked)
    head = f"Finance lineage (last {window(since)}): {len(found)} invariants, {violated} violated, {silent} silent"
    return Reply(head, lines=lines)
