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
import time
import uuid
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .clock import Clock
from .db import Database
from .flags import read_flags
from .models import MessageRef, OutgoingMessage
from .reply import Reply

log = logging.getLogger("revops.outbox")

GIVE_UP_AFTER = timedelta(hours=24)  # a post Slack could not take for a day is marked failed
MAX_BACKOFF = 60  # seconds between attempts while Slack keeps failing
CLAIM_FOR = timedelta(seconds=60)  # a claim outlives a crashed sender by this much


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
    if kind == "update" and not channel and ref:
        existing = await session.get(MessageRef, ref)
        channel = existing.channel if existing is not None else ""
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
    if not channel:
        return None
    reply.private = False
    panic = (await read_flags(session)).panic
    return await enqueue(session, channel=channel, reply=reply, at=at, ref=ref, held=panic)


class Deliverer:
    """Delivers pending posts; `kick()` after a commit, `run()` in the background."""

    def __init__(self, db: Database, clock: Clock, sender: Sender | None, name: str | None = None,
                 interval: float = 1.0):
        self.db = db
        self.clock = clock
        self.sender = sender
        self.name = name or f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # Slack allows about one message per second per channel: keep to it rather than meet 429s.
        self.interval = interval
        self._last_sent: dict[str, float] = {}
        self._next_wake: float | None = None
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
            timeout = every
            if self._next_wake is not None:
                timeout = max(0.01, min(every, self._next_wake - time.monotonic()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def deliver_due(self, limit: int = 200) -> int:
        """Send what is due, oldest first, in order within each channel and at most one
        message per channel per `interval`; returns how many were sent."""
        if self.sender is None:
            return 0
        async with self._lock:
            sent = 0
            now = self.clock.now()
            self._next_wake = None
            async with self.db.transaction() as s:
                rows = (await s.execute(
                    select(OutgoingMessage.id, OutgoingMessage.channel, OutgoingMessage.next_attempt_at,
                           OutgoingMessage.claimed_until)
                    .where(OutgoingMessage.status == "pending")
                    .order_by(OutgoingMessage.id).limit(limit)
                )).all()
            blocked: set[str] = set()
            for msg_id, channel, next_attempt_at, claimed_until in rows:
                if channel in blocked:
                    continue  # an earlier message of this channel goes first
                if next_attempt_at > now or (claimed_until is not None and claimed_until >= now):
                    blocked.add(channel)
                    continue
                wait = self._last_sent.get(channel, -1e9) + self.interval - time.monotonic()
                if wait > 0:
                    blocked.add(channel)
                    wake = time.monotonic() + wait
                    self._next_wake = wake if self._next_wake is None else min(self._next_wake, wake)
                    continue
                delivered = await self._deliver_one(msg_id)
                self._last_sent[channel] = time.monotonic()
                blocked.add(channel)  # one per channel per round; the pacing decides the next
                sent += int(delivered)
            if blocked and self._next_wake is None and any(c in self._last_sent for c in blocked):
                self._next_wake = time.monotonic() + self.interval
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
            if not error.retry or now - row.created_at > GIVE_UP_AFTER:
                row.status = "failed"
                log.warning("message %s to %s failed for good: %s", msg_id, msg.channel, error)
            else:  # Slack is down or busy: keep it, and try again later (no post is lost)
                row.next_attempt_at = now + timedelta(seconds=min(2 ** row.attempts, MAX_BACKOFF))
            return False

    async def release_claims(self) -> None:
        """On shutdown: give back what this process claimed but did not send."""
        async with self.db.transaction() as s:
            await s.execute(update(OutgoingMessage)
                            .where(OutgoingMessage.claimed_by == self.name, OutgoingMessage.status == "pending")
                            .values(claimed_by=None, claimed_until=None))
