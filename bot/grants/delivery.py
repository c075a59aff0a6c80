"""A grant's approval message Slack refused for good (the outbox's delivery-failed hook,
registered in bot/grants/family.py): the requester's notice says the request is still pending
and how an approver decides it without the buttons."""

from __future__ import annotations

from ..deliveries import DeliveryFailure


async def approval_not_posted(session, failure: DeliveryFailure) -> str | None:
    if failure.kind != "post" or not (failure.ref or "").startswith("grant:"):
        return None
    number = failure.ref.split(":", 1)[1]
    return (f"Request #{number} is still pending: an approver can decide it with "
            f"/revops grant approve #{number} (or reject it with /revops grant reject #{number}).")
