"""The approval message and its outcome: what the channel reads about a credit request.

A renderer, not domain code: the command module posts the approval message and updates it
in place; the expiry sweep (`jobs.py`) updates it when a request runs out of time."""

from __future__ import annotations

from datetime import datetime

from bot.reply import Button, Reply

from .models import GrantRequest


def hhmm(when: datetime) -> str:
    return f"{when:%H:%M} UTC"


def amount_text(req: GrantRequest) -> str:
    return f"{req.amount:+d} credits" if req.kind == "adjustment" else f"{req.amount} credits"


def account_label(account) -> str:
    extra = [x for x in (account.email, account.stripe_customer_id) if x and x != account.id]
    return f"`{account.id}`" + (f" ({', '.join(extra)})" if extra else "")


def _title(req: GrantRequest) -> str:
    return "Credit grant" if req.kind == "grant" else "Credit adjustment"


def request_message(req: GrantRequest, account, balance: int) -> Reply:
    """The channel's approval request, with Approve / Reject / Cancel."""
    ttl_min = int((req.expires_at - req.created_at).total_seconds() // 60)
    return Reply(
        f":hourglass_flowing_sand: *{_title(req)} request #{req.id}* needs a second person: an approver who is not "
        f"<@{req.requester}>.",
        fields=[
            ("Requested by", f"<@{req.requester}>"),
            ("Account", account_label(account)),
            ("Amount", amount_text(req)),
            ("Reason", req.reason),
            ("Current balance", f"{balance} credits"),
            ("Expires", f"{hhmm(req.expires_at)} (after {ttl_min} min)"),
        ],
        buttons=[
            Button("Approve", "grants.approve", str(req.id), style="primary",
                   confirm=f"Approve {amount_text(req)} for {req.account_id}? This moves credits."),
            Button("Reject", "grants.reject", str(req.id), style="danger"),
            Button("Cancel request", "grants.cancel", str(req.id)),
        ],
        private=False,
        tag="dry run" if req.dry_run else None,
    )


def outcome_message(req: GrantRequest) -> Reply:
    """The approval request once decided (or expired): it replaces the message in place."""
    title = _title(req)
    when = hhmm(req.decided_at) if req.decided_at else ""
    lines = {
        "approved": f":white_check_mark: *{title} #{req.id} approved* by <@{req.decided_by}> at {when}: "
                    f"{amount_text(req)} to `{req.account_id}`."
                    + (f" New balance: {req.balance_after} credits." if req.balance_after is not None else ""),
        "rejected": f":x: *{title} #{req.id} rejected* by <@{req.decided_by}> at {when}."
                    + (f" Reason: {req.decision_note}" if req.decision_note else ""),
        "cancelled": f":heavy_multiplication_x: *{title} #{req.id} cancelled* by <@{req.decided_by}> at {when}.",
        "expired": f":hourglass: *{title} #{req.id} expired* at {hhmm(req.expires_at)} without a decision; "
                   "nothing was granted.",
    }
    return Reply(
        lines[req.status],
        fields=[("Requested by", f"<@{req.requester}>"), ("Account", f"`{req.account_id}`"),
                ("Amount", amount_text(req)), ("Reason", req.reason)],
        private=False,
        tag="dry run" if req.dry_run else None,
    )
