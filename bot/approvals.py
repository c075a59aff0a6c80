"""The buttons of a four-eyes request (a credit grant, an invoice action), as neutral data.

One set per request — Approve, Reject, Cancel — whose action ids the family registers as
`<family>.approve|reject|cancel`; the channel's approval message shows all three (the router
decides who may use which), a person's App Home only those that person may use."""

from __future__ import annotations

from .reply import Button
from .roles import Role


def decision_buttons(family: str, request_id: int, *, confirm: str) -> list[Button]:
    """Approve (with its confirm question), Reject and Cancel of request `request_id`."""
    value = str(request_id)
    return [Button("Approve", f"{family}.approve", value, style="primary", confirm=confirm),
            Button("Reject", f"{family}.reject", value, style="danger"),
            Button("Cancel request", f"{family}.cancel", value)]


def usable_by(buttons: list[Button], *, requester: str, user: str, role: Role) -> list[Button]:
    """The buttons of `decision_buttons` this person may use: Cancel for the requester, Approve
    and Reject for an approver who is not the requester (the roles of those actions), else none."""
    if requester == user:
        return [b for b in buttons if b.action.endswith(".cancel")]
    if role >= Role.approver:
        return [b for b in buttons if not b.action.endswith(".cancel")]
    return []
