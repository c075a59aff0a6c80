"""What people read about the weekly reconciliation: the `reconcile --weekly` answer (with a
**Sync** button per day whose paid revenue differs), the scheduler's weekly post, and the
answer of a Sync. A renderer, not domain code: `weekly.py` computes, this says it."""

from __future__ import annotations

from bot.reply import Button, Reply
from bot.text import Code, Em, Status, Text, clip

from .invoice_views import money
from .views import scheduled_post
from .weekly import AccountUsage, DaySync, WeeklyReport, weekly_report

SHOW_JUMPS = 10
SHOW_DAYS = 14  # every day of the window (weekly.REVENUE_DAYS) with revenue, one currency each
SYNC_BUTTONS = 7
SHOW_CHANGES = 20


def _rise(usage: AccountUsage) -> str:
    if usage.previous_week <= 0:
        return "none last week"
    return f"last week {usage.previous_week:,}, ×{usage.this_week / usage.previous_week:.1f}"


def _usage_line(n: int, usage: AccountUsage) -> Text:
    return Text(f"  {n}. ", Code(usage.account_id), f" — {usage.this_week:,} credits ({_rise(usage)})")


def weekly_reply(report: WeeklyReport) -> Reply:
    differing = report.differing_days
    if differing:
        head = Text(Status("warning"), f" Weekly reconciliation: paid revenue differs on {len(differing)} "
                    f"day{'s' if len(differing) != 1 else ''} (Stripe / mirror).")
    elif report.jumps:
        head = Text(Status("warning"), f" Weekly reconciliation: {len(report.jumps)} account"
                    f"{'s' if len(report.jumps) != 1 else ''} used over {report.usage_jump:g}× last week's credits.")
    else:
        head = Text(Status("ok"), " Weekly reconciliation: Stripe and the mirror agree on paid revenue.")
    lines: list = [Text(Em("Credits spent"), f": {report.spent_this_week:,} this week, "
                        f"{report.spent_previous_week:,} the week before ({report.accounts_used} accounts this week; "
                        f"weeks end {report.now:%Y-%m-%d %H:%M} UTC)")]
    if report.top:
        lines.append(Text(Em(f"Top {len(report.top)} this week"), ":"))
        lines += [_usage_line(n, usage) for n, usage in enumerate(report.top, 1)]
    jumps = Text(Em("Usage jumps"), f" (more than {report.usage_jump:g}× last week)")
    if report.jumps:
        lines.append(Text(jumps, ":"))
        lines += [_usage_line(n, usage) for n, usage in enumerate(report.jumps[:SHOW_JUMPS], 1)]
        if len(report.jumps) > SHOW_JUMPS:
            lines.append(Text(f"  showing {SHOW_JUMPS} of {len(report.jumps)} — one account: ",
                              Code("/revops credits <account>")))
    else:
        lines.append(Text(jumps, ": none"))
    lines.append(Text(Em("Paid revenue per day"), f" (Stripe / mirror, by invoice date, UTC, since "
                      f"{report.revenue_since:%Y-%m-%d}):"))
    shown = report.days[-SHOW_DAYS:]
    for day in shown:
        line = f"  {day.day}: {money(day.stripe, day.currency)} / {money(day.mirror, day.currency)}"
        if day.differs:
            line += (f"  ← differs by {money(day.difference, day.currency)} "
                     f"({day.stripe_count} / {day.mirror_count} invoices)")
        lines.append(line)
    if len(report.days) > SHOW_DAYS:
        lines.append(f"  (the newest {SHOW_DAYS} of {len(report.days)} day and currency rows)")
    if not report.days:
        lines.append("  no paid invoices in the window")
    buttons = []
    days = sorted({d.day for d in differing})
    for day in days[-SYNC_BUTTONS:]:
        buttons.append(Button(f"Sync {day}", "reconcile.sync_day", day,
                              confirm=f"Fetch the invoices of {day} (UTC) from Stripe into the mirror?"))
    footer = None
    if len(days) > SYNC_BUTTONS:
        footer = Text(f"Sync buttons for the newest {SYNC_BUTTONS} of {len(days)} differing days; "
                      "run the command again after a sync for the others.")
    return Reply(head, lines=lines, buttons=buttons, footer=footer)


async def weekly_reconcile(services) -> Reply:
    """The scheduler's weekly reconcile post for the incident channel."""
    return await scheduled_post("Weekly reconcile", lambda: weekly_report(services), weekly_reply)


def sync_sentence(result: DaySync) -> str:
    changed = len(result.changed)
    return (f"Synced the invoices of {result.day:%Y-%m-%d} from Stripe: {changed} changed, "
            f"{len(result.changes) - changed} already matched.")


def sync_day_reply(result: DaySync) -> Reply:
    lines = [clip(change.sentence(), 500) for change in result.changed[:SHOW_CHANGES]]
    if len(result.changed) > SHOW_CHANGES:
        lines.append(f"(showing {SHOW_CHANGES} of {len(result.changed)} changed invoices)")
    if result.unknown:
        lines.append(Text(f"Paid in the mirror on that day, and Stripe has no invoice of that day by that id "
                          f"(left as they were): ", ", ".join(result.unknown[:10]),
                          f" and {len(result.unknown) - 10} more" if len(result.unknown) > 10 else ""))
    footer = Text("Compare again: ", Code("/revops reconcile --weekly"))
    # a new message: the report keeps its other days' Sync buttons
    return Reply(sync_sentence(result), lines=lines, footer=footer, private=False)
