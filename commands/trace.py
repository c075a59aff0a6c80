"""`trace <evt_…|cs_…|pi_…|in_…|ch_…|sub_…|cus_…|account|email> [--limit N]`: everything the bot
knows about one id, in time order — webhook deliveries and their outcome, the mirror rows,
ledger entries, lineage checks, audit records, incident timeline entries — so an operator can
follow one payment end to end (the SaaS ops runbook's "trace external_event_id"; the B2B
runbook's "correlate via revenue_event_id")."""

from bot.billing import trace as billing_trace
from bot.context import Context
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Em, Status, Text, User, clip

commands = CommandSet("trace")

LEVEL = {"processed": "ok", "passed": "ok", "failed": "failed", "violated": "failed", "denied": "warning",
         "ignored": "info"}


@commands.command("trace <id> [--limit N]",
                  summary="everything the bot knows about one Stripe id, event or account, in time order",
                  role=Role.viewer, examples=["trace pi_3QabcXYZ", "trace evt_1QabcXYZ", "trace ada@example.com"])
async def show_trace(ctx: Context, args: dict) -> Reply:
    ref = args["id"].strip()
    limit = max(1, min(args.get("limit", 30), 100))
    found = await billing_trace.trace(ctx.session, ref)
    entries = found.entries[-limit:]  # the newest, oldest first
    total = len(found.entries)
    counted = f"{total}+" if found.capped else f"{total}"
    head = Text("Trace of ", Code(ref), ": ",
                f"the newest {len(entries)} of {counted} entries" if total > len(entries) else f"{counted} entries")
    lines = [_line(entry) for entry in entries] or [
        Text("Nothing stored mentions ", Code(ref), ": no webhook delivery, mirror row, ledger entry, audit "
             "record or timeline entry.")]
    others = [name for name in found.names if name != ref]
    footer = Text("Followed: ", ", ".join(others[:12])) if others else None
    more = None
    if total > len(entries):
        more = Text(f"{len(entries)} of {counted}: raise ", Code("--limit"), " (up to 100), or trace one of the ids")
        footer = more if footer is None else Text(footer, " — ", more)
    return Reply(head, lines=lines, footer=footer, keep="end", more=more)


def _line(entry: billing_trace.Entry) -> Text:
    parts: list = [f"{entry.at:%Y-%m-%d %H:%M:%S} ", Em(entry.source), " ", Code(entry.ref), " "]
    if entry.outcome in LEVEL:
        parts[:0] = [Status(LEVEL[entry.outcome]), " "]
    parts.append(clip(entry.what, 300))
    if entry.outcome and entry.source in ("webhook", "audit", "lineage"):
        parts.append(f" → {entry.outcome}")
    if entry.actor and entry.source in ("audit", "timeline", "ledger"):
        actor = entry.actor
        parts += [" by ", User(actor, ping=False) if actor[:1] in ("U", "W") and actor.isalnum() else actor]
    return Text(*parts)
