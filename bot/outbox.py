"""Posts to Slack channels, written in the same transaction as the change they
report and delivered after commit by whichever process claims them first.

A post survives a restart and a Slack outage: it stays pending until Slack
takes it (429s are retried after Retry-After by the client; other failures back
off), and a claim is a conditional update so two processes never send one twice.

Slack's answers are classified (bot/slack/client.py): a retryable failure (429, 5xx, the
network) keeps the post and the order of its channel; a permanent one (`not_in_channel`,
`msg_too_long`, `missing_scope`, an error we do not know...) marks it failed at once, so it
never holds back later posts to that channel, and its author is told in words (an ephemeral
in the channel they used, else a DM), the audit log records it and the families' hooks (the
incident timeline) say so; a dead token (`token_revoked`, `invalid_auth`...) pauses sending
(bot/deliveries.py): posts stay pending until a Slack call with the token works again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from datetime import datetime, timedelta
from typing import Awaitable, Callable, Iterable, Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit, deliveries
from .clock import Clock
from .db import Database
from .deliveries import DeliveryFailure, failure_words, notice_text
from .flags import read_flags
from .models import MessageRef, OutgoingMessage
from .reply import Reply

log = logging.getLogger("revops.outbox")

GIVE_UP_AFTER = timedelta(hours=24)  # a post Slack could not take for a day is marked failed
MAX_BACKOFF = 60  # seconds between attempts while Slack keeps failing
CLAIM_FOR = timedelta(seconds=60)  # a claim outlives a crashed sender by this much
RECHECK_TOKEN_EVERY = 30.0  # seconds between checks of a revoked token while sending is paused

# What a SendError asks of the outbox.
RETRY, PERMANENT, PAUSE = "retry", "permanent", "pause"

class SendError(Exception):
    """A Slack call that did not take. `action`: RETRY (later, in order), PERMANENT (fail the
    post now, tell its author) or PAUSE (the token is dead: stop sending, keep the post)."""

    def __init__(self, message: str, retry: bool = True, *, action: str | None = None, code: str | None = None):
        super().__init__(message)
        self.action = action or (RETRY if retry else PERMANENT)
        self.retry = self.action == RETRY
        self.code = code or message


class Sender(Protocol):
    async def post(self, channel: str, reply: Reply, thread_ts: str | None) -> str: ...

    async def update(self, channel: str, ts: str, reply: Reply) -> None: ...

    # Optional: `ephemeral(channel, user, reply)` (else a notice goes as a DM through `post`) and
    # `token_works()` (else a paused outbox is resumed only from outside, e.g. by preflight).


# Called in the transaction that marks a post failed for good; may return a sentence for its author.
FailureHook = Callable[[AsyncSession, DeliveryFailure], Awaitable[str | None]]


async def enqueue(session: AsyncSession, *, channel: str, reply: Reply, at: datetime, kind: str = "post",
                  ref: str | None = None, thread_ts: str | None = None, held: bool = False,
                  author: str | None = None, origin_channel: str | None = None,
                  on_failure: str | None = None) -> OutgoingMessage:
    """Queue a post; `held=True` records it without ever sending it (panic mode). `author` (who
    caused it) is told, in `origin_channel` or by DM, if Slack refuses it for good."""
    if kind == "update" and not channel and ref:
        existing = await session.get(MessageRef, ref)
        channel = existing.channel if existing is not None else ""
    if on_failure is None and author:
        on_failure = "tell"
    msg = OutgoingMessage(channel=channel, kind=kind, reply=reply.to_dict(), ref=ref, thread_ts=thread_ts,
                          status="held" if held else "pending", attempts=0, next_attempt_at=at, created_at=at,
                          author=author, origin_channel=origin_channel, on_failure=on_failure)
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
                 interval: float = 1.0, on_failure: Iterable[FailureHook] = ()):
        self.db = db
        self.clock = clock
        self.sender = sender
        self.on_failure = list(on_failure)  # the families' hooks (bot/family.py: delivery_failed)
        self.recheck_token_every = RECHECK_TOKEN_EVERY
        self._token_checked = -1e9
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
                state = await deliveries.read_state(s)
                rows = (await s.execute(
                    select(OutgoingMessage.id, OutgoingMessage.channel, OutgoingMessage.next_attempt_at,
                           OutgoingMessage.claimed_until)
                    .where(OutgoingMessage.status == "pending")
                    .order_by(OutgoingMessage.id).limit(limit)
                )).all()
            if state.paused is not None and rows and not await self._token_works_again():
                return 0  # the token is dead: the posts wait, untried, for it to work again
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
                if delivered is None:
                    break  # Slack said the token is dead: sending is paused
                self._last_sent[channel] = time.monotonic()
                blocked.add(channel)  # one per channel per round; the pacing decides the next
                sent += int(delivered)
            if blocked and self._next_wake is None and any(c in self._last_sent for c in blocked):
                self._next_wake = time.monotonic() + self.interval
            return sent

    async def _token_works_again(self) -> bool:
        """While sending is paused: check the token (auth.test) now and then; resume when it works."""
        check = getattr(self.sender, "token_works", None)
        wait = self._token_checked + self.recheck_token_every - time.monotonic()
        if check is None or wait > 0:
            self._next_wake = time.monotonic() + (wait if check is not None else self.recheck_token_every)
            return False
        self._token_checked = time.monotonic()
        if not await check():
            self._next_wake = time.monotonic() + self.recheck_token_every
            return False
        async with self.db.transaction() as s:
            await deliveries.resume(s, self.clock.now())
        return True

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

    async def _deliver_one(self, msg_id: int) -> bool | None:
        """Send one claimed post: True when Slack took it, False when not (now), None when Slack
        said the token is dead (sending is paused; the post stays pending, untried)."""
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
                    never = ref is not None and ref.ts is None and await _post_failed(s, msg.ref)
                if never:  # its post failed for good (its author was told): nothing will ever be there
                    raise SendError("the message to update was never posted", action=PERMANENT, code="never_posted")
                if ref is None or ref.ts is None:
                    raise SendError("the message to update has not been posted yet")
                await self.sender.update(ref.channel, ref.ts, reply)
                ts = ref.ts
            elif msg.kind == "ephemeral":
                ephemeral = getattr(self.sender, "ephemeral", None)
                if ephemeral is not None:
                    await ephemeral(msg.channel, msg.author, reply)
                else:
                    ts = await self.sender.post(msg.author, reply, None)
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
            row.error = str(error)[:500]
            if error.action == PAUSE:  # not this post's fault: keep it, untried, for when the token works
                await deliveries.pause(s, f"{error} at {now:%Y-%m-%d %H:%M} UTC", now)
                return None
            row.attempts += 1
            if error.action == PERMANENT or now - row.created_at > GIVE_UP_AFTER:
                row.status = "failed"
                log.warning("message %s to %s failed for good: %s", msg_id, msg.channel, error)
                await self._failed(s, row, error, now)
            else:  # Slack is down or busy: keep it, and try again later (no post is lost)
                row.next_attempt_at = now + timedelta(seconds=min(2 ** row.attempts, MAX_BACKOFF))
            return False

    async def _failed(self, session: AsyncSession, row: OutgoingMessage, error: SendError, now: datetime) -> None:
        """A post Slack refused for good, in the transaction that marks it failed: the families'
        hooks (the incident timeline...), the audit record, and its author told in words."""
        failure = DeliveryFailure(row.id, row.kind, row.channel, row.ref, row.author, row.origin_channel,
                                  error.code, str(error), now)
        notes = []
        for hook in self.on_failure:
            note = await hook(session, failure)
            if note:
                notes.append(note)
        what = failure_words(row.kind, row.channel, row.author)
        await audit.append(session, at=now, actor=row.author or "revops", command="slack.delivery",
                           args={"message": row.id, "kind": row.kind, "channel": row.channel, "ref": row.ref,
                                 "error": error.code},
                           outcome="failed", channel=row.origin_channel or row.channel, surface="slack",
                           detail=f"the {what} could not be delivered: {error}"[:500], subject=row.ref)
        if not row.author or error.code == "never_posted":
            return
        if row.on_failure == "tell":
            text = notice_text(row.kind, row.channel, row.author, error.code, str(error), notes)
            if row.origin_channel and row.origin_channel != row.channel and row.origin_channel[:1] in "CG":
                await enqueue(session, channel=row.origin_channel, reply=Reply(text), at=now, kind="ephemeral",
                              author=row.author, on_failure="dm")
            else:
                await enqueue(session, channel=row.author, reply=Reply(text, private=False), at=now)
        elif row.on_failure == "dm":  # the ephemeral notice itself was refused: a DM instead
            await enqueue(session, channel=row.author, reply=Reply.from_dict(row.reply), at=now)

    async def release_claims(self) -> None:
        """On shutdown: give back what this process claimed but did not send."""
        async with self.db.transaction() as s:
            await s.execute(update(OutgoingMessage)
                            .where(OutgoingMessage.claimed_by == self.name, OutgoingMessage.status == "pending")
                            .values(claimed_by=None, claimed_until=None))


async def _post_failed(session: AsyncSession, ref: str) -> bool:
    """Whether the post that was to carry `ref` failed for good."""
    status = (await session.execute(
        select(OutgoingMessage.status).where(OutgoingMessage.ref == ref, OutgoingMessage.kind == "post")
        .order_by(OutgoingMessage.id.desc()).limit(1))).scalar_one_or_none()
    return status == "failed"
