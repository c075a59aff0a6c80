"""Posts to Slack channels, written in the same transaction as the change they
report and delivered after commit by whichever process claims them first.

A post survives a restart and a Slack outage: it stays pending until Slack
takes it (429s are retried after Retry-After by the client; other failures back
off), and a claim is a conditional update so two processes never send one twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .clock import Clock
from .db import Database
from .models import MessageRef, OutgoingMessage
from .reply import Reply

log = logging.getLogger("revops.outbox")

MAX_ATTEMPTS = 12
CLAIM_FOR = timedelta(seconds=60)


class SendError(Exception):
    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class Sender(Protocol):
    async def post(self, channel: str, reply: Reply, thread_ts: str | None) -> str: ...

    async def update(self, channel: str, ts: str, reply: Reply) -> None: ...


async def enqueue(session: AsyncSession, *, channel: str, reply: Reply, at: datetime, kind: str = "post",
                  ref: str | None = None, thread_ts: str | None = None, held: bool = False) -> OutgoingMessage:
    """Queue a post; `held=True` records it without ever sending it (panic mode)."""
    msg = OutgoingMessage(channel=channel, kind=kind, reply=reply.to_dict(), ref=ref, thread_ts=thread_ts,
                          status="held" if held else "pending", attempts=0, next_attempt_at=at, created_at=at)
    session.add(msg)
    if kind == "post" and ref:
        existing = await session.get(MessageRef, ref)
        if existing is None:
            session.add(MessageRef(ref=ref, channel=channel, ts=None))
    await session.flush()
    return msg


async def post_automated(session: AsyncSession, *, channel: str | None, reply: Reply, at: datetime,
                         ref: str | None = None) -> OutgoingMessage | None:
    """A post made by automation (scheduler, probes, alerts): in panic mode it is
    recorded as `held` and never sent. Returns the row (check `.status`)."""
    from .flags import read_flags

    if not channel:
        return None
    reply.private = False
    panic = (await read_flags(session)).panic
    return await enqueue(session, channel=channel, reply=reply, at=at, ref=ref, held=panic)


class Deliverer:
    """Delivers pending posts; `kick()` after a commit, `run()` in the background."""

    def __init__(self, db: Database, clock: Clock, sender: Sender | None, name: str | None = None):
        self.db = db
        self.clock = clock
        self.sender = sender
        self.name = name or f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def kick(self) -> None:
        self._wake.set()

    async def run(self, every: float = 1.0) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception:  # keep delivering whatever one batch did
                log.exception("outbox delivery failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=every)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def deliver_due(self, limit: int = 50) -> int:
        """Send what is due; returns how many were sent."""
        if self.sender is None:
            return 0
        async with self._lock:
            sent = 0
            now = self.clock.now()
            async with self.db.transaction() as s:
                rows = (await s.execute(
                    select(OutgoingMessage.id)
                    .where(OutgoingMessage.status == "pending", OutgoingMessage.next_attempt_at <= now,
                           or_(OutgoingMessage.claimed_until.is_(None), OutgoingMessage.claimed_until < now))
                    .order_by(OutgoingMessage.id).limit(limit)
                )).scalars().all()
            for msg_id in rows:
                if await self._deliver_one(msg_id):
                    sent += 1
            return sent

    async def _claim(self, msg_id: int) -> OutgoingMessage | None:
        now = self.clock.now()
        async with self.db.transaction() as s:
            result = await s.execute(
                update(OutgoingMessage)
                .where(and_(OutgoingMessage.id == msg_id, OutgoingMessage.status == "pending",
                            or_(OutgoingMessage.claimed_until.is_(None), OutgoingMessage.claimed_until < now)))
                .values(claimed_by=self.name, claimed_until=now + CLAIM_FOR)
            )
            if result.rowcount != 1:
                return None
            return await s.get(OutgoingMessage, msg_id)

    async def _deliver_one(self, msg_id: int) -> bool:
        msg = await self._claim(msg_id)
        if msg is None:
            return False
        reply = Reply.from_dict(msg.reply)
        ts: str | None = None
        error: SendError | None = None
        try:
            if msg.kind == "update":
                async with self.db.transaction() as s:
                    ref = await s.get(MessageRef, msg.ref) if msg.ref else None
                if ref is None or ref.ts is None:
                    raise SendError("the message to update has not been posted yet")
                await self.sender.update(ref.channel, ref.ts, reply)
                ts = ref.ts
            else:
                ts = await self.sender.post(msg.channel, reply, msg.thread_ts)
        except SendError as exc:
            error = exc
        except Exception as exc:  # a sender bug must not lose the post
            log.exception("sending message %s failed", msg_id)
            error = SendError(type(exc).__name__)
        now = self.clock.now()
        async with self.db.transaction() as s:
            row = await s.get(OutgoingMessage, msg_id)
            row.claimed_by = None
            row.claimed_until = None
            if error is None:
                row.status = "sent"
                row.sent_at = now
                row.ts = ts
                if msg.kind == "post" and msg.ref:
                    ref = await s.get(MessageRef, msg.ref)
                    if ref is not None:
                        ref.ts = ts
                        ref.channel = msg.channel
                return True
            row.attempts += 1
            row.error = str(error)[:500]
            if not error.retry or row.attempts >= MAX_ATTEMPTS:
                row.status = "failed"
                log.warning("message %s to %s failed for good: %s", msg_id, msg.channel, error)
            else:
                row.next_attempt_at = now + timedelta(seconds=min(2 ** row.attempts, 300))
            return False
