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

One pace per channel across every process (issue 16): a channel's next allowed send time lives
in `channel_pace`. A process sends to a channel only while it holds the channel's row (a
conditional UPDATE taking a short lease, renewed while a send is in flight): it sends that
channel's oldest due post, sets the next send time (now + the interval, or + Slack's Retry-After)
and lets go. So any number of processes keep a channel at one post per interval, in order.
Different channels are sent concurrently (at most CONCURRENCY at once): a channel Slack slows
down waits alone. Pacing and leases use the wall clock (Slack's rate is physical time).

At most once after a crash: every post carries Slack message metadata naming its outbox id;
before a post whose earlier claim lapsed (its process died mid-send) or whose earlier attempt
failed is sent again, the channel's history is searched for it (`find_post`, needing the
`channels:history` / `groups:history` scopes); found, it is marked sent with that ts. If the
history cannot be read the post is sent (at least once on a network error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable, Iterable, Protocol

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit, deliveries
from .clock import Clock
from .db import Database
from .deliveries import DeliveryFailure, failure_words, notice_text
from .flags import read_flags
from .models import ChannelPace, MessageRef, OutgoingMessage
from .reply import Reply

log = logging.getLogger("revops.outbox")

GIVE_UP_AFTER = timedelta(hours=24)  # a post Slack could not take for a day is marked failed
MAX_BACKOFF = 60  # seconds between attempts while Slack keeps failing
LEASE = timedelta(seconds=10)  # a claim (of a channel, of a post) outlives a crashed sender by this much
CLAIM_FOR = LEASE
RENEW_EVERY = LEASE.total_seconds() / 3  # while a send is in flight its leases are renewed this often
CONCURRENCY = 8  # channels sent to at once by one process
RECHECK_TOKEN_EVERY = 30.0  # seconds between checks of a revoked token while sending is paused

# What a SendError asks of the outbox.
RETRY, PERMANENT, PAUSE = "retry", "permanent", "pause"

class SendError(Exception):
    """A Slack call that did not take. `action`: RETRY (later, in order), PERMANENT (fail the
    post now, tell its author) or PAUSE (the token is dead: stop sending, keep the post)."""

    def __init__(self, message: str, retry: bool = True, *, action: str | None = None, code: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.action = action or (RETRY if retry else PERMANENT)
        self.retry = self.action == RETRY
        self.code = code or message
        self.retry_after = retry_after  # Slack's Retry-After (seconds): how long the channel sleeps


@dataclass
class FileReply(Reply):
    """A file posted to a channel (outbox kind "file"): the reply is its comment. The sender's
    `upload(channel, reply, thread_ts)` uploads it (Slack: files.getUploadURLExternal, the upload,
    files.completeUploadExternal; the console writes it to disk)."""

    filename: str = "file.txt"
    title: str = ""
    content: str = ""


class Sender(Protocol):
    async def post(self, channel: str, reply: Reply, thread_ts: str | None) -> str: ...

    async def update(self, channel: str, ts: str, reply: Reply) -> None: ...

    async def upload(self, channel: str, reply: FileReply, thread_ts: str | None) -> str: ...

    # Optional: `ephemeral(channel, user, reply)` (else a notice goes as a DM through `post`),
    # `token_works()` (else a paused outbox is resumed only from outside, e.g. by preflight) and
    # `find_post(channel, outbox_id, oldest)` -> ts | None, with `post(..., outbox_id=N)`: a sender
    # that has it tags each post with its outbox id and finds it again (at most once on a crash).


def _wall() -> datetime:
    return datetime.now(timezone.utc)


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
                         ref: str | None = None, owner: str | None = None) -> OutgoingMessage | None:
    """A post made by automation (scheduler, probes, alerts): in panic mode it is
    recorded as `held` and never sent. `owner` (e.g. the incident's commander) is told by DM if
    Slack refuses it for good — nobody typed it, so somebody must hear that it never arrived.
    Returns the row (check `.status`)."""
    if not channel:
        return None
    reply.private = False
    panic = (await read_flags(session)).panic
    return await enqueue(session, channel=channel, reply=reply, at=at, ref=ref, held=panic, author=owner,
                         on_failure="owner" if owner else None)


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
        # Slack allows about one message per second per channel: keep to it rather than meet 429s
        # (the pace is shared by every process, in `channel_pace`).
        self.interval = interval
        self.concurrency = CONCURRENCY
        self._next_wake: float | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopping = False

    def kick(self) -> None:
        self._wake.set()

    async def run(self, every: float = 1.0) -> None:
        while not self._stopping:
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

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; wait (at most `grace` seconds) for the sends in flight to finish, then give
        back every claim this process holds. `run()` returns."""
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=grace)
        except asyncio.TimeoutError:
            log.warning("outbox: sends still in flight after %.0fs; releasing their claims", grace)
        else:
            self._lock.release()
        with contextlib.suppress(Exception):
            await self.release_claims()

    def _wake_at(self, wall_time: datetime, wall_now: datetime) -> None:
        wake = time.monotonic() + max(0.0, (wall_time - wall_now).total_seconds())
        self._next_wake = wake if self._next_wake is None else min(self._next_wake, wake)

    async def deliver_due(self, limit: int = 200) -> int:
        """Send what is due, oldest first, in order within each channel and at most one
        message per channel per `interval` across every process; returns how many were sent."""
        if self.sender is None or self._stopping:
            return 0
        async with self._lock:
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
                heads: dict[str, tuple] = {}
                for row in rows:
                    heads.setdefault(row[1], row)  # an earlier message of a channel goes first
                paces = {}
                if heads:
                    paces = {p.channel: (p.next_send_at, p.claimed_until) for p in (await s.execute(
                        select(ChannelPace).where(ChannelPace.channel.in_(list(heads))))).scalars()}
            if state.paused is not None and rows and not await self._token_works_again():
                return 0  # the token is dead: the posts wait, untried, for it to work again
            wall = _wall()
            todo = []
            for channel, (msg_id, _, next_attempt_at, claimed_until) in heads.items():
                if next_attempt_at > now or (claimed_until is not None and claimed_until >= now):
                    continue
                next_send_at, held_until = paces.get(channel, (None, None))
                if held_until is not None and held_until >= wall:
                    self._wake_at(wall + timedelta(seconds=self.interval), wall)  # another process sends
                    continue
                if next_send_at is not None and next_send_at > wall:
                    self._wake_at(next_send_at, wall)
                    continue
                todo.append(channel)
            results = []
            # As many channels at a time as this process sends at once, so that the processes
            # share a backlog (the channels one holds, another skips) instead of one holding it all.
            for start in range(0, len(todo), self.concurrency):
                if self._stopping:
                    break
                chunk = todo[start:start + self.concurrency]
                claimed = await self._claim_heads([c for c in chunk if c in paces])
                for channel in (c for c in chunk if c not in paces):  # a channel's first post: its pace row
                    if await self._claim_channel(channel):
                        claimed += await self._claim_heads([channel], held=True)
                results += await asyncio.gather(*(self._deliver_claimed(msg, maybe_sent)
                                                  for msg, maybe_sent in claimed))
            if any(r is not None for r in results) and self._next_wake is None:
                self._next_wake = time.monotonic() + self.interval
            return sum(1 for r in results if r)

    async def _claim_heads(self, channels: list[str], held: bool = False) -> list[tuple[OutgoingMessage, bool]]:
        """In one short transaction for a whole batch: take the leases of those of `channels` that
        are free and whose next send time has come (`held`: this process holds them already), and
        the claim of each one's oldest pending post, if it is due; a channel whose oldest post is
        not (now) is let go at once. Returns each claimed post with whether it may have reached
        Slack already (an earlier claim lapsed, or an earlier attempt failed with an unknown
        outcome)."""
        if not channels:
            return []
        wall = _wall()
        now = self.clock.now()
        async with self.db.transaction() as s:
            if held:
                mine = list(channels)
            else:
                mine = list((await s.execute(
                    update(ChannelPace)
                    .where(ChannelPace.channel.in_(channels), ChannelPace.next_send_at <= wall,
                           or_(ChannelPace.claimed_until.is_(None), ChannelPace.claimed_until < wall))
                    .values(claimed_by=self.name, claimed_until=wall + LEASE)
                    .returning(ChannelPace.channel)
                    .execution_options(synchronize_session=False))).scalars())
            if not mine:
                return []
            # The oldest pending post of each channel held now (a post committed after the scan
            # with a lower id goes first: ids are not handed out in commit order).
            heads = list((await s.execute(
                select(func.min(OutgoingMessage.id)).where(OutgoingMessage.status == "pending",
                                                           OutgoingMessage.channel.in_(mine))
                .group_by(OutgoingMessage.channel))).scalars())
            rows = {m.id: (m, m.claimed_by, m.attempts, m.error) for m in (await s.execute(
                select(OutgoingMessage).where(OutgoingMessage.id.in_(heads)))).scalars()}
            taken = set((await s.execute(
                update(OutgoingMessage)
                .where(OutgoingMessage.id.in_(heads), OutgoingMessage.status == "pending",
                       OutgoingMessage.next_attempt_at <= now,
                       or_(OutgoingMessage.claimed_until.is_(None), OutgoingMessage.claimed_until < now))
                .values(claimed_by=self.name, claimed_until=now + LEASE)
                .returning(OutgoingMessage.id)
                .execution_options(synchronize_session=False))).scalars()) if heads else set()
            idle = set(mine) - {rows[i][0].channel for i in taken}
            if idle:
                await s.execute(update(ChannelPace)
                                .where(ChannelPace.channel.in_(list(idle)), ChannelPace.claimed_by == self.name)
                                .values(claimed_by=None, claimed_until=None)
                                .execution_options(synchronize_session=False))
        claimed = []
        for msg_id in sorted(taken):
            msg, claimed_by, attempts, error = rows[msg_id]
            # "Slack said ...": Slack answered, so the post is not there; anything else is unknown.
            unknown = attempts > 0 and not (error or "").startswith("Slack said")
            claimed.append((msg, claimed_by is not None or unknown))
        return claimed

    async def _deliver_claimed(self, msg: OutgoingMessage, maybe_sent: bool) -> bool | None:
        """Send a claimed post (its channel held here), then let the channel go with its next send
        time. True: sent; False: not (now); None: Slack said the token is dead (sending paused)."""
        released = False
        try:
            async with self._renewing(msg.channel, msg.id):
                delivered, released = await self._deliver_one(msg, maybe_sent)
            return delivered
        finally:
            if not released:  # the send raised before its outcome was written: no next send time
                with contextlib.suppress(Exception):
                    await self._release_channel(msg.channel, None)

    async def _claim_channel(self, channel: str) -> bool:
        """Take a channel's lease when it has no pace row yet (its first post): the row, inserted
        by whichever process gets there first."""
        wall = _wall()
        try:
            async with self.db.transaction() as s:
                s.add(ChannelPace(channel=channel, next_send_at=wall, claimed_by=self.name,
                                  claimed_until=wall + LEASE))
                await s.flush()
        except IntegrityError:
            return False
        return True

    async def _release_channel(self, channel: str, wait: float | None, session: AsyncSession | None = None) -> None:
        """Let go of the channel; `wait`: seconds until its next send (None: nothing was sent).
        With `session`, in that transaction (the one that writes the post's outcome)."""
        values: dict = {"claimed_by": None, "claimed_until": None}
        if wait is not None:
            values["next_send_at"] = _wall() + timedelta(seconds=wait)
        statement = (update(ChannelPace).where(ChannelPace.channel == channel, ChannelPace.claimed_by == self.name)
                     .values(**values).execution_options(synchronize_session=False))
        if session is not None:
            await session.execute(statement)
        else:
            async with self.db.transaction() as s:
                await s.execute(statement)
        if wait is not None:
            wake = time.monotonic() + wait
            self._next_wake = wake if self._next_wake is None else min(self._next_wake, wake)

    @asynccontextmanager
    async def _renewing(self, channel: str, msg_id: int):
        """While a send is in flight: renew the channel's and the post's leases."""
        async def renew():
            while True:
                await asyncio.sleep(RENEW_EVERY)
                with contextlib.suppress(Exception):
                    async with self.db.transaction() as s:
                        await s.execute(update(ChannelPace)
                                        .where(ChannelPace.channel == channel, ChannelPace.claimed_by == self.name)
                                        .values(claimed_until=_wall() + LEASE))
                        await s.execute(update(OutgoingMessage)
                                        .where(OutgoingMessage.id == msg_id, OutgoingMessage.claimed_by == self.name,
                                               OutgoingMessage.status == "pending")
                                        .values(claimed_until=self.clock.now() + LEASE))

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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

    async def _posted_already(self, msg: OutgoingMessage) -> str | None:
        """The ts of this post if Slack has it already (found by its outbox id in the channel)."""
        find = getattr(self.sender, "find_post", None)
        if find is None:
            return None
        try:
            return await find(msg.channel, msg.id, msg.created_at - timedelta(minutes=1))
        except Exception as exc:  # the history cannot be read: send (at least once)
            log.warning("could not look for message %s in %s (%s); sending it", msg.id, msg.channel,
                        type(exc).__name__)
            return None

    async def _deliver_one(self, msg: OutgoingMessage, maybe_sent: bool) -> tuple[bool | None, bool]:
        """Send one claimed post: True when Slack took it, False when not (now), None when Slack
        said the token is dead (sending is paused; the post stays pending, untried). The
        transaction that writes the outcome also lets the channel go, with its next send time
        (now + the interval, or Slack's Retry-After; none when nothing reached Slack); with the
        outcome, whether it did."""
        msg_id = msg.id
        wait: float | None = self.interval
        reply = (FileReply if msg.kind == "file" else Reply).from_dict(msg.reply)
        ts: str | None = None
        error: SendError | None = None
        try:
            if msg.kind == "update":
                async with self.db.transaction() as s:
                    ref = await s.get(MessageRef, msg.ref) if msg.ref else None
                    never = ref is not None and ref.ts is None and await _post_failed(s, msg.ref)
                if never:  # its post failed for good (its author was told): nothing will ever be there
                    wait = None
                    raise SendError("the message to update was never posted", action=PERMANENT, code="never_posted")
                if ref is None or ref.ts is None:
                    wait = None
                    raise SendError("the message to update has not been posted yet")
                await self.sender.update(ref.channel, ref.ts, reply)
                ts = ref.ts
            elif msg.kind == "ephemeral":
                ephemeral = getattr(self.sender, "ephemeral", None)
                if ephemeral is not None:
                    await ephemeral(msg.channel, msg.author, reply)
                else:
                    ts = await self.sender.post(msg.author, reply, None)
            elif msg.kind == "file":  # at least once: an upload carries no metadata to find it by
                ts = await self.sender.upload(msg.channel, reply, msg.thread_ts)
            elif getattr(self.sender, "find_post", None) is not None:
                ts = await self._posted_already(msg) if maybe_sent else None
                if ts is not None:
                    log.info("message %s was posted already (%s): not posting it again", msg_id, ts)
                    wait = None
                else:
                    ts = await self.sender.post(msg.channel, reply, msg.thread_ts, outbox_id=msg.id)
            else:
                ts = await self.sender.post(msg.channel, reply, msg.thread_ts)
        except SendError as exc:
            error = exc
        except Exception as exc:  # a sender bug must not lose the post
            log.exception("sending message %s failed", msg_id)
            error = SendError(type(exc).__name__)
        if error is not None and error.retry_after:
            wait = max(self.interval, error.retry_after)  # Slack slowed this channel down: it sleeps alone
        now = self.clock.now()

        async def outcome(s: AsyncSession) -> tuple[bool | None, float | None]:
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
                return True, wait
            row.error = str(error)[:500]
            if error.action == PAUSE:  # not this post's fault: keep it, untried, for when the token works
                await deliveries.pause(s, f"{error} at {now:%Y-%m-%d %H:%M} UTC", now)
                return None, None
            if error.action == RETRY and error.retry_after and now - row.created_at <= GIVE_UP_AFTER:
                # Slack said how long (429): the channel's pace holds the post that long (wall clock);
                # not a failed attempt, so it does not lengthen the back-off of real failures.
                row.next_attempt_at = now
                return False, wait
            row.attempts += 1
            if error.action == PERMANENT or now - row.created_at > GIVE_UP_AFTER:
                row.status = "failed"
                log.warning("message %s to %s failed for good: %s", msg_id, msg.channel, error)
                await self._failed(s, row, error, now)
            else:  # Slack is down or busy: keep it, and try again later (no post is lost)
                row.next_attempt_at = now + timedelta(seconds=min(2 ** row.attempts, MAX_BACKOFF))
            return False, wait

        async with self.db.transaction() as s:
            delivered, wait = await outcome(s)
            await self._release_channel(msg.channel, wait, session=s)
        return delivered, True

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
        automated = row.on_failure == "owner"  # the bot's own post; its author is its owner
        await audit.append(session, at=now, actor="revops" if automated else row.author or "revops",
                           command="slack.delivery",
                           args={"message": row.id, "kind": row.kind, "channel": row.channel, "ref": row.ref,
                                 "error": error.code},
                           outcome="failed", channel=row.origin_channel or row.channel, surface="slack",
                           detail=f"the {what} could not be delivered: {error}"[:500], subject=row.ref)
        if not row.author or error.code == "never_posted":
            return
        if automated:
            text = notice_text(row.kind, row.channel, row.author, error.code, str(error), notes, automated=True)
            await enqueue(session, channel=row.author, reply=Reply(text, private=False), at=now)
        elif row.on_failure == "tell":
            text = notice_text(row.kind, row.channel, row.author, error.code, str(error), notes)
            if row.origin_channel and row.origin_channel != row.channel and row.origin_channel[:1] in "CG":
                await enqueue(session, channel=row.origin_channel, reply=Reply(text), at=now, kind="ephemeral",
                              author=row.author, on_failure="dm")
            else:
                await enqueue(session, channel=row.author, reply=Reply(text, private=False), at=now)
        elif row.on_failure == "dm":  # the ephemeral notice itself was refused: a DM instead
            await enqueue(session, channel=row.author, reply=Reply.from_dict(row.reply), at=now)

    async def release_claims(self) -> None:
        """On shutdown: give back what this process claimed but did not send, and its channels."""
        async with self.db.transaction() as s:
            await s.execute(update(ChannelPace).where(ChannelPace.claimed_by == self.name)
                            .values(claimed_by=None, claimed_until=None))
            # A post still claimed here was in flight when the grace ran out: its lease ends now but
            # `claimed_by` stays, so whoever sends it next first looks for it in the channel.
            await s.execute(update(OutgoingMessage)
                            .where(OutgoingMessage.claimed_by == self.name, OutgoingMessage.status == "pending")
                            .values(claimed_until=self.clock.now() - timedelta(seconds=1)))


async def _post_failed(session: AsyncSession, ref: str) -> bool:
    """Whether the post that was to carry `ref` failed for good."""
    status = (await session.execute(
        select(OutgoingMessage.status).where(OutgoingMessage.ref == ref, OutgoingMessage.kind == "post")
        .order_by(OutgoingMessage.id.desc()).limit(1))).scalar_one_or_none()
    return status == "failed"
