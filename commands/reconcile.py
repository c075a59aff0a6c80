"""`reconcile [--days N]`: Stripe against the bot — active subscriptions, missed events,
per-day event counts, freshness — with a **Replay N missed events** button for an approver.
`reconcile --weekly`: credits spent per account this week against last, and paid revenue per day
(mirror against Stripe) with a **Sync** button per day that differs (an approver's, as Replay).

`bot.billing.reconcile` computes; `bot.billing.views` renders the report (here and in the
scheduler's daily post to the incident channel, `views.daily_reconcile`)."""

from datetime import datetime, timezone

from bot.billing import reconcile as billing_reconcile
from bot.billing import weekly as billing_weekly
from bot.billing.policy import EventPolicy
from bot.billing.views import reconcile_reply
from bot.billing.weekly_views import sync_day_reply, sync_sentence, weekly_reply
from bot.context import Context
from bot.errors import UsageError
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Text, clip

from ._billing import stripe_of

commands = CommandSet("reconcile")

MAX_DAYS = 30  # Stripe keeps events for 30 days
SHOW = 15


@commands.command("reconcile [--days N]", summary="Stripe vs the bot: active subscriptions, missed events, "
                  "per-day counts, freshness", role=Role.responder, slow=True, examples=["reconcile --days 3"])
async def reconcile(ctx: Context, args: dict) -> Reply:
    days = args.get("days", 7)
    if not 1 <= days <= MAX_DAYS:
        raise UsageError(f"--days must be between 1 and {MAX_DAYS} (Stripe keeps events for 30 days)")
    report = await billing_reconcile.reconcile(ctx.session, stripe_of(ctx), now=ctx.now, days=days)
    return reconcile_reply(report)


def _replay_sentence(summary: billing_reconcile.ReplaySummary) -> str:
    if not summary.results:
        return "No missed events any more: nothing to replay."
    parts = [f"{n} {status}" for status, n in sorted(summary.counts().items())]
    return f"Replayed {len(summary.results)} missed events: " + ", ".join(parts) + "."


@commands.action("replay_missed", role=Role.approver, slow=True)
async def replay_missed(ctx: Context, value: str) -> Reply:
    try:
        since_s, until_s = (int(part) for part in value.split(":", 1))
    except ValueError:
        raise UsageError(Text("this button is malformed; run ", Code("/revops reconcile"), " again")) from None
    since = datetime.fromtimestamp(since_s, tz=timezone.utc)
    until = datetime.fromtimestamp(until_s, tz=timezone.utc)
    summary = await billing_reconcile.replay_missed(ctx.session, stripe_of(ctx), since=since, until=until,
                                                    now=ctx.now, policy=EventPolicy.from_settings(ctx.settings))
    sentence = _replay_sentence(summary)
    ctx.note(subject="stripe-events", detail=sentence)
    lines = [Text(f"{r.event_id}: {r.status} — ", clip(r.detail or "", 300)) for r in summary.results[-SHOW:]]
    footer = None
    if len(summary.results) > SHOW:
        footer = Text(f"Showing the newest {SHOW} of {len(summary.results)} replayed events — what still fails: ",
                      Code("/revops replay failed"), "; compare again: ", Code("/revops reconcile"))
    return Reply(sentence, lines=lines, footer=footer, replace=True, private=False)


@commands.command("reconcile --weekly", summary="credits spent per account this week vs last (top 10, usage jumps), "
                  "paid revenue per day mirror vs Stripe, Sync for the days that differ",
                  role=Role.responder, slow=True, examples=["reconcile --weekly"])
async def reconcile_weekly(ctx: Context, args: dict) -> Reply:
    report = await billing_weekly.weekly(ctx.session, stripe_of(ctx), now=ctx.now,
                                         usage_jump=ctx.settings.cfg.reconcile.usage_jump)
    return weekly_reply(report)


@commands.action("sync_day", role=Role.approver, slow=True)
async def sync_day(ctx: Context, value: str) -> Reply:
    """The weekly reconcile's **Sync YYYY-MM-DD**: that day's invoices from Stripe into the mirror."""
    day = billing_weekly.parse_day(value)
    if day is None:
        raise UsageError(Text("this button is malformed; run ", Code("/revops reconcile --weekly"), " again"))
    result = await billing_weekly.sync_day(ctx.session, stripe_of(ctx), day, now=ctx.now)
    ctx.note(subject=f"invoices:{day:%Y-%m-%d}", detail=sync_sentence(result))
    return sync_day_reply(result)
