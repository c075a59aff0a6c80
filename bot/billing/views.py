"""What people read about billing reconciliation: the `reconcile` answer (with its
**Replay N missed events** button) and the scheduler's daily post.

A renderer, not domain code: `reconcile.py` computes the report, this says it."""

from __future__ import annotations

from datetime import timedelta

from bot.errors import UpstreamError
from bot.reply import Button, Reply
from bot.text import Code, Em, Status, Text, clip

from .reconcile import ReconcileReport, daily_report

SHOW_IDS = 10
SHOW_DAYS = 31  # every day of the longest window (`reconcile --days 30`)
SHOW_UNCREDITED = 10
NOTE_CHARS = 300


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:SHOW_IDS])
    return shown + (f" and {len(ids) - SHOW_IDS} more" if len(ids) > SHOW_IDS else "")


def reconcile_reply(report: ReconcileReport) -> Reply:
    head = (Text(Status("ok"), f" Stripe and the bot agree (last {report.days} d).") if report.in_step
            else Text(Status("warning"), f" Stripe and the bot differ (last {report.days} d)."))
    lines: list = [Text(Em("Active subscriptions"),
                        f": Stripe {len(report.stripe_active)}, mirror {len(report.local_active)}")]
    if report.only_stripe:
        lines.append(f"  active in Stripe, not in the mirror: {_ids(report.only_stripe)}")
    if report.only_local:
        lines.append(f"  active in the mirror, not in Stripe: {_ids(report.only_local)}")
    if report.missed:
        lines.append(Text(Em("Missed events"), f": {len(report.missed)} that Stripe has and the bot never stored: ",
                          _ids([f"{e['id']} ({e.get('type')})" for e in report.missed])))
    else:
        lines.append(Text(Em("Missed events"), ": none"))
    lines.append(Text(Em("Events per day"), " (Stripe / bot):"))
    days = sorted(set(report.stripe_per_day) | set(report.local_per_day))
    for day in days[-SHOW_DAYS:]:
        s, b = report.stripe_per_day.get(day, 0), report.local_per_day.get(day, 0)
        lines.append(f"  {day}: {s} / {b}" + ("" if s == b else "  ← differs"))
    if len(days) > SHOW_DAYS:
        lines.append(f"  (the newest {SHOW_DAYS} of {len(days)} days)")
    if not report.stripe_per_day and not report.local_per_day:
        lines.append("  no events in the window")
    if report.newest_received is None:
        lines.append(Text(Em("Freshness"), ": ", Status("warning"), " stale — the bot has never received a Stripe event"))
    else:
        age = report.now - report.newest_received
        state = Text(Status("warning"), " stale (no event for over 24 h)") if report.stale else "fresh"
        lines.append(Text(Em("Freshness"), f": newest event received {_ago(age)} ago — ", state))
    if report.uncredited:
        lines.append(Text(Em("Checkouts not credited"), f": {len(report.uncredited)} paid, stored as failed (fix, then ",
                          Code("replay"), " each):"))
        lines += [Text(f"  {event_id}: ", clip(reason, 160)) for event_id, reason in report.uncredited[:SHOW_UNCREDITED]]
        if len(report.uncredited) > SHOW_UNCREDITED:
            lines.append(Text(f"  showing {SHOW_UNCREDITED} of {len(report.uncredited)} — all of them: ",
                              Code("/revops replay failed"), " (they are stored as failed)"))
    lines += [clip(note, NOTE_CHARS) for note in report.notes]
    buttons = []
    if report.missed:
        value = f"{int(report.since.timestamp())}:{int(report.until.timestamp())}"
        buttons.append(Button(f"Replay {len(report.missed)} missed events", "reconcile.replay_missed", value,
                              style="primary", confirm=f"Fetch and apply {len(report.missed)} missed Stripe events?"))
    return Reply(head, lines=lines, buttons=buttons)


async def scheduled_post(title: str, build, render) -> Reply:
    """A scheduler's reconcile post for the incident channel: `build()` computes the report,
    `render(report)` says it; a Stripe failure becomes a post that says so rather than an exception."""
    try:
        report = await build()
    except UpstreamError as exc:
        return Reply(Text(Status("warning"), f" {title} could not run: {exc}."), private=False)
    reply = render(report)
    reply.text = Text(f"{title} — ", reply.text)
    reply.private = False
    return reply


async def daily_reconcile(services, days: int = 1) -> Reply:
    """The scheduler's daily reconcile post: the last day reconciled and said."""
    return await scheduled_post("Daily reconcile", lambda: daily_report(services, days), reconcile_reply)
