"""The grants family's part of the App Home: the credit requests waiting for a decision.

Data, not Slack: a Reply per request with the buttons this person may use on it — Approve and
Reject for an approver who is not the requester (four eyes), Cancel for the requester — the same
action ids as the approval message in the channel, so a click goes through the router as there."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.approvals import usable_by
from bot.reply import Reply
from bot.roles import Role
from bot.settings import Settings
from bot.text import Code, Em, Icon, Text, User

from . import service
from .views import amount_text, hhmm, reason_text, request_buttons

SHOWN = 10  # requests on the home; `grant pending` lists more
REASON_CHARS = 200


async def pending_requests(session: AsyncSession, user: str, role: Role, now: datetime,
                           settings: Settings) -> list[Reply]:
    rows = await service.pending_requests(session, now, limit=SHOWN)
    total = await service.count_pending(session, now)
    head = Reply(Text(Icon("hourglass_flowing_sand"), " ", Em(f"Credit requests waiting: {total}")),
                 lines=[] if rows else ["None."],
                 footer=(Text(f"The newest {len(rows)} of {total}; all of them: ", Code("/revops grant pending"))
                         if total > len(rows) else None))
    replies = [head]
    for req in rows:
        mine = req.requester == user
        replies.append(Reply(
            Text(Em(f"#{req.id}"), f" {amount_text(req)} to ", Code(req.account_id), " by ",
                 User(req.requester, ping=False), " — ", reason_text(req.reason, REASON_CHARS),
                 f" (expires {hhmm(req.expires_at)})",
                 " — yours: a different approver decides" if mine else ""),
            buttons=usable_by(request_buttons(req), requester=req.requester, user=user, role=role), tag="dry run" if req.dry_run else None))
    return replies
