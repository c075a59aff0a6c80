"""`sync <sub_…|cus_…>`: pull from Stripe, overwrite the local mirror, show what changed.

Everything is fetched before anything is written: when Stripe fails halfway, the answer says
so and the mirror is left exactly as it was."""

from bot.billing.mirror import MirrorChange, sync_customer, sync_subscription
from bot.context import Context
from bot.errors import NotFound, UsageError
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Text, clip

SHOW = 30  # changed objects listed (a customer's sync may touch many)

from ._billing import stripe_of

commands = CommandSet("sync")


async def sync_from_stripe(ctx: Context, object_id: str) -> Reply:
    object_id = object_id.strip()
    stripe = stripe_of(ctx) if object_id.startswith(("cus_", "sub_")) else None
    if object_id.startswith("cus_"):
        changes = await sync_customer(ctx.session, stripe, object_id, ctx.now)
        kind = "customer"
    elif object_id.startswith("sub_"):
        changes = await sync_subscription(ctx.session, stripe, object_id, ctx.now)
        kind = "subscription"
    else:
        raise UsageError(Text("expected a sub_… or cus_… id, got ", Code(object_id[:40])))
    if changes is None:
        raise NotFound(Text(f"Stripe has no {kind} ", Code(object_id), "; the mirror was left as it was."))
    return render_sync(object_id, changes, ctx)


def render_sync(object_id: str, changes: list[MirrorChange], ctx: Context) -> Reply:
    changed = [c for c in changes if c.changed]
    unchanged = len(changes) - len(changed)
    ctx.note(subject=object_id, detail=f"{len(changed)} changed, {unchanged} unchanged")
    if not changed:
        text = Text(Code(object_id), f": the mirror already matched Stripe ({unchanged} objects checked).")
    else:
        text = Text("Synced ", Code(object_id), f" from Stripe: {len(changed)} changed, {unchanged} unchanged.")
    # a sentence holds Stripe's data (a customer's name): plain text, bounded
    sentences = [c.sentence() for c in changed] + [c.sentence() for c in changes if not c.changed and c.changes]
    lines = [clip(sentence, 500) for sentence in sentences[:SHOW]]
    footer = None
    if len(sentences) > SHOW:
        footer = Text(f"Showing {SHOW} of {len(sentences)} changed objects — one of them: ",
                      Code("/revops sync <sub_…>"), " or ", Code("/revops customer <ref>"))
    return Reply(text, lines=lines, footer=footer)


@commands.command("sync <id>", summary="overwrite the local mirror from Stripe (sub_… or cus_…) and show what changed",
                  role=Role.responder, mutating=True, slow=True, examples=["sync cus_Q1w2e3", "sync sub_9x8y7z"])
async def sync(ctx: Context, args: dict) -> Reply:
    return await sync_from_stripe(ctx, args["id"])


@commands.action("customer", role=Role.responder, slow=True)
async def sync_button(ctx: Context, value: str) -> Reply:
    """The customer view's **Sync from Stripe** button."""
    return await sync_from_stripe(ctx, value)
