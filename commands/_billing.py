"""Small helpers shared by the billing command families (customer, credits, replay, sync, reconcile)."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.billing.models import LedgerEntry
from bot.billing.stripe_client import StripeClient
from bot.context import Context
from bot.durations import format_duration
from bot.errors import UpstreamError
from bot.text import Text, User, clip

ENTRY_REASON_CHARS = 300  # a ledger entry's reason in a list (the ledger keeps it whole)


def stripe_of(ctx: Context) -> StripeClient:
    stripe = ctx.services.stripe
    if stripe is None or not stripe.configured:
        raise UpstreamError("Stripe is not configured (STRIPE_SECRET_KEY is missing); nothing was changed")
    return stripe


def who(actor: str) -> Text:
    """A ledger entry's actor: a Slack user by name (no notification), else the word (stripe, app)."""
    return Text(User(actor, ping=False) if actor[:1] in ("U", "W") and actor.isalnum() else actor)


def when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "—"


def entry_line(entry: LedgerEntry) -> Text:
    return Text(f"{when(entry.at)}  {entry.delta:+d} {entry.kind} — ", clip(entry.reason or "", ENTRY_REASON_CHARS),
                " (by ", who(entry.actor), f") → {entry.balance_after}")


def money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "—"
    return f"{amount / 100:,.2f} {(currency or '').upper()}".strip()


def window(since: timedelta) -> str:
    """A `--since` window in words: "24 hours", "90m"."""
    hours = since.total_seconds() / 3600
    return f"{hours:g} hours" if hours >= 1 and hours == int(hours) else format_duration(since)
