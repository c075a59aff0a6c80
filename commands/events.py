"""`events [--status failed|ignored|processed] [--type T] [--since 24h] [--limit N]`: the Stripe
webhook log, newest first, with the reason stored for failed and ignored events (the SaaS ops
runbook's "check the Logs table for failed or ignored status"; the go-live runbook's
`/admin/events?event_type=…`)."""

from datetime import timedelta

from bot.billing import trace as billing_trace
from bot.billing.models import EVENT_STATUSES
from bot.context import Context
from bot.errors import UsageError
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Status, Text, clip

from ._billing import window

commands = CommandSet("events")

LEVEL = {"processed": "ok", "failed": "failed", "ignored": "info"}


@commands.command("events [--status STATUS] [--type TYPE] [--since DURATION] [--limit N]",
                  summary="the Stripe webhook log, newest first, with the reason for failed and ignored events",
                  role=Role.viewer, examples=["events --status failed", "events --type invoice.paid --since 2h"])
async def show_events(ctx: Context, args: dict) -> Reply:
    status = args.get("status")
    if status is not None and status not in EVENT_STATUSES:
        raise UsageError(Text(Code("--status"), f" must be one of {', '.join(EVENT_STATUSES)}, got ",
                              Code(status[:40])))
    since: timedelta = args.get("since", timedelta(hours=24))
    limit = max(1, min(args.get("limit", 20), 100))
    page = await billing_trace.webhook_log(ctx.session, status=status, event_type=args.get("type"),
                                           since=ctx.now - since, limit=limit)
    filters = ", ".join(part for part in (status, args.get("type") and f"type {args['type']}") if part)
    head = f"Stripe events ({filters + ', ' if filters else ''}last {window(since)}): "
    head += f"{len(page.rows)} of {page.total}" if page.total > len(page.rows) else f"{page.total}"
    lines = [_line(row) for row in page.rows] or ["No events match."]
    more = None
    if page.total > len(page.rows):
        more = Text(f"{len(page.rows)} of {page.total}: narrow it with ", Code("--status"), ", ", Code("--type"),
                    " or ", Code("--since"), ", or raise ", Code("--limit"), " (up to 100)")
    return Reply(head, lines=lines, footer=more, more=more)


def _line(row) -> Text:
    reason = row.detail or row.error or ""
    return Text(Status(LEVEL.get(row.status, "info")), " ", f"{row.received_at:%Y-%m-%d %H:%M:%S} ", Code(row.id),
                " ", Code(row.type), f" {row.status}",
                f" ({row.object_id})" if row.object_id else "",
                f" via {row.source}" if row.source != "webhook" else "",
                f", {row.attempts} attempts" if row.attempts > 1 else "",
                (" — " + clip(reason, 300)) if reason and row.status != "processed" else "")
