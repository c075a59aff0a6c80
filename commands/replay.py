"""`replay <evt_…>` and `replay failed [--since 24h]`: apply Stripe events again, idempotently.

A single replay re-fetches the event from Stripe (the stored copy when Stripe no longer has it,
or cannot be reached — a thin event always), fetches again what applying it needs (fetch.py:
line items, a thin event's object), and says what changed, or "already applied". A bulk replay
of failed events uses the stored copies as they are, after an approver's confirm click.
"""

from datetime import timedelta

from sqlalchemy import func, select

from bot.billing.models import StripeEvent
from bot.billing.events import Result, store_and_apply
from bot.billing.fetch import prepare
from bot.billing.intake import REVOPS, storable
from bot.billing.policy import EventPolicy
from bot.context import Context
from bot.durations import format_duration
from bot.errors import NotFound, UpstreamError, UsageError
from bot.registry import CommandSet
from bot.reply import Button, Reply
from bot.roles import Role
from bot.text import Code, Icon, Status, Text, clip

from ._billing import stripe_of

commands = CommandSet("replay")

MAX_BULK = 500
SHOW = 15
DETAIL_CHARS = 300  # what applying an event did, in a list (the event row keeps it whole)
ICONS = {"processed": Status("ok"), "ignored": Icon("heavy_minus_sign"), "failed": Status("failed")}


def _result_line(result: Result, kind: str | None = None) -> Text:
    return Text(ICONS.get(result.status, ""), f" {result.event_id}{f' ({kind})' if kind else ''}: {result.status} — ",
                clip(result.detail or "", DETAIL_CHARS))


@commands.command("replay <event>", summary="fetch a Stripe event again (or use the stored copy) and apply it; idempotent",
                  role=Role.responder, mutating=True, slow=True, examples=["replay evt_1QabcXYZ"])
async def replay_event(ctx: Context, args: dict) -> Reply:
    event_id = args["event"].strip()
    if not event_id.startswith("evt_"):
        raise UsageError(Text("expected an evt_… id, got ", Code(event_id[:40])))
    stripe = stripe_of(ctx)
    policy = EventPolicy.from_settings(ctx.settings)
    note = None
    try:
        event = await stripe.retrieve("event", event_id)
    except UpstreamError as exc:
        event, note = None, f"{exc}"
    async with ctx.services.db.reading() as reading:  # the stored copy, read before the unit of work writes
        copy = await reading.get(StripeEvent, event_id)
        stored_payload = dict(copy.payload) if copy is not None else None
    if event is not None:
        event = storable(event, ctx.now)
    elif stored_payload is not None:
        # The stored copy, with what it needs from Stripe fetched again (a failed fetch is what a replay is for).
        event = {key: value for key, value in stored_payload.items() if key != REVOPS}
        kept = {k: v for k, v in (stored_payload.get(REVOPS) or {}).items() if k in ("problem", "body")}
        if kept:
            event[REVOPS] = kept
        note = (f"{note.removesuffix('; nothing was changed')}: replayed the bot's stored copy" if note
                else "Stripe no longer has this event: replayed the bot's stored copy")
    elif note:
        raise UpstreamError(Text(f"{note.removesuffix('; nothing was changed')}, and the bot has no stored copy of ",
                                 Code(event_id), "; nothing was changed"))
    else:
        raise NotFound(Text("No event ", Code(event_id), ": Stripe does not know it and the bot never received it."))
    event = await prepare(stripe, event, policy)  # network calls before the unit of work's first statement
    stored = await ctx.session.get(StripeEvent, event_id)
    previous = stored.status if stored else None
    [result] = await store_and_apply(ctx.session, [event], source="replay", now=ctx.now, again=True, policy=policy)
    ctx.note(subject=event_id, detail=f"{result.status}: {result.detail}"[:400])
    kind = event.get("type")
    if result.status == "failed":
        text = Text(Status("failed"), " Replaying ", Code(event_id), f" ({kind}) failed: ", clip(result.detail, 1500))
    elif result.changed:
        text = Text(Status("ok"), " Replayed ", Code(event_id), f" ({kind}): ", clip(result.detail, 1500))
    else:
        text = Text(Code(event_id), f" ({kind}) was already applied; nothing changed (",
                    clip(result.detail, 1500), ").")
    lines = []
    if previous is None:
        lines.append("The bot had never received this event; it is stored now.")
    elif previous != result.status:
        lines.append(f"Status: {previous} → {result.status}")
    if note:
        lines.append(note)
    return Reply(text, lines=lines)


async def _failed_since(ctx: Context, since: timedelta, customer_id: str | None = None):
    query = select(StripeEvent).where(StripeEvent.status == "failed", StripeEvent.received_at >= ctx.now - since)
    if customer_id:
        query = query.where(StripeEvent.customer_id == customer_id)
    rows = await ctx.session.execute(query.order_by(StripeEvent.created, StripeEvent.id).limit(MAX_BULK))
    return list(rows.scalars())


async def _count_failed(ctx: Context, since: timedelta) -> int:
    return (await ctx.session.execute(select(func.count()).select_from(StripeEvent).where(
        StripeEvent.status == "failed", StripeEvent.received_at >= ctx.now - since))).scalar_one()


@commands.command("replay failed [--since DURATION]", summary="replay every stored failed event in the window, after a confirm",
                  role=Role.approver, examples=["replay failed --since 6h"])
async def replay_failed(ctx: Context, args: dict) -> Reply:
    since: timedelta = args.get("since", timedelta(hours=24))
    count = await _count_failed(ctx, since)
    window = format_duration(since)
    if not count:
        return Reply(f"No failed Stripe events received in the last {window}.")
    seconds = int(since.total_seconds())
    return Reply(
        f"{count} failed Stripe event{'s' if count != 1 else ''} received in the last {window}. Replay them?",
        buttons=[
            Button(f"Replay {count} failed events", "replay.failed_confirm", str(seconds), style="danger",
                   confirm=f"Apply {count} failed Stripe events again?"),
            Button("Cancel", "replay.failed_cancel", "cancel"),
        ],
    )


async def _replay_rows(ctx: Context, rows: list[StripeEvent], what: str) -> Reply:
    results = await store_and_apply(ctx.session, [row.payload for row in rows], source="replay", now=ctx.now,
                                    again=True, policy=EventPolicy.from_settings(ctx.settings))
    fixed = sum(1 for r in results if r.status != "failed")
    ctx.note(subject="stripe-events", detail=f"replayed {len(results)} {what}: {fixed} no longer failing")
    if not results:
        return Reply(f"No {what} to replay.", replace=True)
    # the newest SHOW (the rows come oldest first), and where to look for the rest
    lines = [_result_line(r, row.type) for r, row in list(zip(results, rows))[-SHOW:]]
    footer = None
    if len(results) > SHOW:
        footer = Text(f"Showing the newest {SHOW} of {len(results)} replayed events — what still fails: ",
                      Code("/revops replay failed"), "; one customer's events: ", Code("/revops customer <ref>"))
    return Reply(f"Replayed {len(results)} {what}: {fixed} now applied, {len(results) - fixed} still failing.",
                 lines=lines, footer=footer, replace=True, private=False)


@commands.action("failed_confirm", role=Role.approver)
async def confirm_replay_failed(ctx: Context, value: str) -> Reply:
    try:
        since = timedelta(seconds=int(value))
    except ValueError:
        raise UsageError(Text("this button is malformed; run ", Code("/revops replay failed"), " again")) from None
    return await _replay_rows(ctx, await _failed_since(ctx, since), "failed events")


@commands.action("failed_cancel", role=Role.approver, mutating=False)
async def cancel_replay_failed(ctx: Context, value: str) -> Reply:
    return Reply("Nothing replayed.", replace=True)


@commands.action("failed_for", role=Role.approver)
async def replay_failed_for_customer(ctx: Context, value: str) -> Reply:
    """The customer view's **Replay failed events** button: that customer's failed events (30 days)."""
    rows = await _failed_since(ctx, timedelta(days=30), customer_id=value)
    return await _replay_rows(ctx, rows, f"failed events of {value}")
