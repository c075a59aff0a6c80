"""The billing family's part of the App Home: invoice requests (mark paid, void) waiting for a
second person, and the Stripe events that failed lately.

Data, not Slack: Replies whose buttons are the invoice requests' own actions (Approve / Reject for
an approver who is not the requester, Cancel for the requester), so a click goes through the
router exactly as the approval message's does."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.approvals import usable_by
from bot.reply import Reply
from bot.roles import Role
from bot.settings import Settings
from bot.text import Code, Em, Icon, Status, Text, User, clip

from . import trace
from .invoice_views import hhmm, money, request_buttons
from .invoices import ACTION_NAMES, InvoiceActionRequest

SHOWN = 10
EVENTS_SHOWN = 5
EVENTS_WINDOW = timedelta(hours=24)
REASON_CHARS = 200


def _pending(now: datetime):
    return (InvoiceActionRequest.status == "pending", InvoiceActionRequest.expires_at > now)


async def invoice_requests(session: AsyncSession, user: str, role: Role, now: datetime,
                           settings: Settings) -> list[Reply]:
    newest = (await session.execute(select(InvoiceActionRequest).where(*_pending(now))
                                    .order_by(InvoiceActionRequest.id.desc()).limit(SHOWN))).scalars().all()
    total = (await session.execute(select(func.count()).select_from(InvoiceActionRequest)
                                   .where(*_pending(now)))).scalar_one()
    replies = [Reply(Text(Icon("receipt"), " ", Em(f"Invoice requests waiting: {total}")),
                     lines=[] if newest else ["None."],
                     footer=f"The newest {len(newest)} of {total}." if total > len(newest) else None)]
    for req in reversed(newest):
        mine = req.requester == user
        replies.append(Reply(
            Text(Em(f"#{req.id}"), f" {ACTION_NAMES[req.action]}: ", Code(req.invoice_id),
                 f" ({money(req.amount, req.currency)}) by ", User(req.requester, ping=False), " — ",
                 clip(req.reason, REASON_CHARS), f" (expires {hhmm(req.expires_at)})",
                 " — yours: a different approver decides" if mine else ""),
            buttons=usable_by(request_buttons(req), requester=req.requester, user=user, role=role), tag="dry run" if req.dry_run else None))
    return replies


async def failed_events(session: AsyncSession, user: str, role: Role, now: datetime,
                        settings: Settings) -> list[Reply]:
    page = await trace.webhook_log(session, status="failed", event_type=None, since=now - EVENTS_WINDOW,
                                   limit=EVENTS_SHOWN)
    lines = [Text(Status("failed"), f" {row.received_at:%Y-%m-%d %H:%M} ", Code(row.id), " ", Code(row.type),
                  (" — " + clip(row.detail or row.error or "", 200)) if (row.detail or row.error) else "")
             for row in page.rows]
    return [Reply(Text(Icon("credit_card"), " ", Em(f"Failed Stripe events, last 24 hours: {page.total}")),
                  lines=lines or ["None."],
                  footer=(Text(f"The newest {len(page.rows)} of {page.total}; all of them: ",
                               Code("/revops events --status failed")) if page.total > len(page.rows) else None))]
