"""The approval message and its outcome: what the channel reads about a credit request.

A renderer, not domain code: the command module posts the approval message and updates it
in place; the expiry sweep (`jobs.py`) updates it when a request runs out of time.

Typed text (bot/text.py): people are `User` pieces, ids `Code`, a reason or a reject reason is
plain data (escaped by the Slack renderer) and clipped to `REASON_CHARS` here; the request
row keeps it whole."""

from __future__ import annotations

from datetime import datetime

from bot.approvals import decision_buttons
from bot.reply import Button, Reply
from bot.text import Code, Em, Icon, Text, User, clip

from .models import GrantRequest

REASON_CHARS = 500  # a reason in the approval message, its outcome and the DMs


def hhmm(when: datetime) -> str:
    return f"{when:%H:%M} UTC"


def amount_text(req: GrantRequest) -> str:
    return f"{req.amount:+d} credits" if req.kind == "adjustment" else f"{req.amount} credits"


def reason_text(value: str | None, limit: int = REASON_CHARS) -> Text:
    """A person's reason: data, bounded (the stored reason stays whole)."""
    return clip(value or "", limit)


def account_label(account) -> Text:
    extra = [x for x in (account.email, account.stripe_customer_id) if x and x != account.id]
    return Text(Code(account.id), f" ({', '.join(extra)})" if extra else "")


def _title(req: GrantRequest) -> str:
    return "Credit grant" if req.kind == "grant" else "Credit adjustment"


def request_message(req: GrantRequest, account, balance: int) -> Reply:
    """The channel's approval request, with Approve / Reject / Cancel."""
    ttl_min = int((req.expires_at - req.created_at).total_seconds() // 60)
    return Reply(
        Text(Icon("hourglass_flowing_sand"), " ", Em(f"{_title(req)} request #{req.id}"),
             " needs a second person: an approver who is not ", User(req.requester), "."),
        fields=[
            ("Requested by", Text(User(req.requester))),
            ("Account", account_label(account)),
            ("Amount", amount_text(req)),
            ("Reason", reason_text(req.reason)),
            ("Current balance", f"{balance} credits"),
            ("Expires", f"{hhmm(req.expires_at)} (after {ttl_min} min)"),
        ],
        buttons=request_buttons(req),
        private=False,
        tag="dry run" if req.dry_run else None,
    )


def request_buttons(req: GrantRequest) -> list[Button]:
    return decision_buttons("grants", req.id,
                            confirm=f"Approve {amount_text(req)} for {req.account_id}? This moves credits.")


def outcome_text(req: GrantRequest) -> Text:
    title = _title(req)
    when = hhmm(req.decided_at) if req.decided_at else ""
    if req.status == "approved":
        return Text(Icon("white_check_mark"), " ", Em(f"{title} #{req.id} approved"), " by ", User(req.decided_by),
                    f" at {when}: {amount_text(req)} to ", Code(req.account_id), ".",
                    f" New balance: {req.balance_after} credits." if req.balance_after is not None else "")
    if req.status == "rejected":
        return Text(Icon("x"), " ", Em(f"{title} #{req.id} rejected"), " by ", User(req.decided_by), f" at {when}.",
                    Text(" Reason: ", reason_text(req.decision_note)) if req.decision_note else "")
    if req.status == "cancelled":
        return Text(Icon("heavy_multiplication_x"), " ", Em(f"{title} #{req.id} cancelled"), " by ",
                    User(req.decided_by), f" at {when}.")
    return Text(Icon("hourglass"), " ", Em(f"{title} #{req.id} expired"),
                f" at {hhmm(req.expires_at)} without a decision; nothing was granted.")


def outcome_message(req: GrantRequest) -> Reply:
    """The approval request once decided (or expired): it replaces the message in place."""
    return Reply(
        outcome_text(req),
        fields=[("Requested by", Text(User(req.requester))), ("Account", Text(Code(req.account_id))),
                ("Amount", amount_text(req)), ("Reason", reason_text(req.reason))],
        private=False,
        tag="dry run" if req.dry_run else None,
    )
