"""What the bot keeps about its deliveries to and from Slack:

* request claims: a signed slash command or interaction is claimed by its delivery keys (from
  its signature and timestamp, and its trigger_id): first in the process (`Recent`: the same
  delivery again on this replica is answered at once), then in the database — an action that
  changes things in a short transaction of its own before the router runs it, a read that leaves
  posts or timeline entries in the transaction that writes them. The same delivery replayed
  inside Slack's 5-minute window finds the claim and does not run (or record) again, on whichever
  replica it lands (SPEC §10). A read that records nothing is claimed only in its process: on
  another replica it may be answered again, to the same person, changing nothing;
* the app's state: `app_uninstalled` / `tokens_revoked` (or Slack answering a post with a dead
  token) pause sending; posts stay pending until a Slack call with the token works again;
* a post Slack refused for good (`DeliveryFailure`), as the outbox hands it to the families'
  hooks (the incident timeline, the grants' "still decidable" note).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .groupcommit import GroupCommit
from .models import SlackAppState, SlackDelivery, SlackRequestClaim

log = logging.getLogger("revops.slack")

CLAIMS_KEPT = timedelta(minutes=10)  # Slack refuses a signature older than 5 minutes
EVENTS_KEPT = timedelta(days=1)  # Slack retries an event for about an hour
PRUNE_EVERY = 60.0  # seconds between a process's opportunistic prunes

_last_prune = 0.0


def delivery_keys(timestamp: str | None, signature: str | None, trigger_id: str | None) -> tuple[str, ...]:
    """The keys a signed request is claimed under: its signature and timestamp (a byte-for-byte
    replay) and its trigger_id (the same click or command signed again)."""
    keys = []
    if timestamp and signature:
        keys.append("sig:" + hashlib.sha256(f"v0:{timestamp}:{signature}".encode()).hexdigest())
    if trigger_id:
        keys.append("trigger:" + hashlib.sha256(trigger_id.encode()).hexdigest())
    return tuple(keys)


async def insert_claims(session, keys: tuple[str, ...], now: datetime) -> None:
    """Claim a delivery in `session`'s transaction: one Core INSERT of its keys (a second insert of
    any of them raises IntegrityError: a replay). Not through the ORM: a unit-of-work flush cost more
    than the statement, on every command that records anything."""
    await session.insert_rows(SlackRequestClaim, [{"key": key, "claimed_at": now} for key in keys])


class Recent:
    """The deliveries this process took inside the signature window: a replay landing on the same
    replica is answered without a database trip (bounded; the oldest go first)."""

    def __init__(self, kept: float = CLAIMS_KEPT.total_seconds(), most: int = 100_000):
        self.kept, self.most = kept, most
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first(self, keys: tuple[str, ...]) -> bool:
        """Take the delivery; False when any of its keys was taken inside the window."""
        now = time.monotonic()
        while self._seen and (len(self._seen) >= self.most or next(iter(self._seen.values())) < now - self.kept):
            self._seen.popitem(last=False)
        if any(key in self._seen for key in keys):
            return False
        for key in keys:
            self._seen[key] = now
        return True

    def forget(self, keys: tuple[str, ...]) -> None:
        """The delivery did not run after all (the database was down): its retry may."""
        for key in keys:
            self._seen.pop(key, None)


class Claims(GroupCommit[tuple[tuple[str, ...], datetime]]):
    """Claims of deliveries, each committed before its action runs. Concurrent requests share one
    short transaction (bot/groupcommit.py): 40 grant requests at once on SQLite would otherwise
    queue 40 more commits behind the one writer. A batch holding a claimed key rolls back and its
    claims are taken one by one: the replay gets False, the others True."""

    name = "slack-claims"

    async def store_batch(self, transaction, items) -> list[bool]:
        async with transaction() as session:
            for keys, now in items:
                await insert_claims(session, keys, now)
        return [True] * len(items)

    async def store_one(self, item) -> bool:
        keys, now = item
        try:
            async with self.db.transaction() as session:
                await insert_claims(session, keys, now)
        except IntegrityError:
            return False
        return True

    async def claim(self, keys: tuple[str, ...], now: datetime) -> bool:
        """Claim a delivery; False when any of its keys was claimed already (a replay: do not run it
        again), by this process or another."""
        taken = await self.submit((keys, now))
        await _prune_now_and_then(self.db, now)
        return taken


async def _prune_now_and_then(db, now: datetime) -> None:
    """Claims older than the signature window, and event ids older than Slack's retries, go —
    at most once a minute per process, so a request seldom pays for it."""
    global _last_prune
    if time.monotonic() - _last_prune < PRUNE_EVERY:
        return
    _last_prune = time.monotonic()
    try:
        async with db.transaction() as session:
            await session.execute(delete(SlackRequestClaim).where(SlackRequestClaim.claimed_at < now - CLAIMS_KEPT))
            await session.execute(delete(SlackDelivery).where(SlackDelivery.received_at < now - EVENTS_KEPT))
    except Exception as exc:  # pruning is housekeeping: the request it rode on goes on
        log.warning("pruning Slack request claims failed: %s", type(exc).__name__)


# --- the app's state ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SlackState:
    paused: str | None  # why sending is paused, None when Slack takes posts
    since: datetime | None
    cleared_at: datetime | None

    def describe(self) -> str:
        if self.paused is None:
            return "sending"
        since = f" since {self.since:%Y-%m-%d %H:%M} UTC" if self.since else ""
        return f"paused: {self.paused}{since}; posts are kept and sent once the token works again"


async def read_state(session: AsyncSession) -> SlackState:
    row = (await session.execute(select(SlackAppState.paused, SlackAppState.since, SlackAppState.cleared_at)
                                 .where(SlackAppState.id == 1))).first()
    return SlackState(*row) if row is not None else SlackState(None, None, None)


async def pause(session: AsyncSession, reason: str, at: datetime) -> None:
    """Stop sending (the first reason is kept while paused)."""
    row = await session.get(SlackAppState, 1)
    if row is None:
        session.add(SlackAppState(id=1, paused=reason[:200], since=at))
    elif row.paused is None:
        row.paused, row.since = reason[:200], at
    log.warning("sending to Slack paused: %s", reason)


async def resume(session: AsyncSession, at: datetime) -> bool:
    """Sending again (a Slack call with the token worked); True when it was paused."""
    result = await session.execute(update(SlackAppState).where(SlackAppState.id == 1,
                                                               SlackAppState.paused.is_not(None))
                                   .values(paused=None, since=None, cleared_at=at))
    if result.rowcount:
        log.warning("sending to Slack resumed: the token works again")
    return bool(result.rowcount)


# --- a post Slack refused for good -------------------------------------------------------------

@dataclass(frozen=True)
class DeliveryFailure:
    """What the families' delivery-failed hooks see (`Family.delivery_failed`). A hook runs in
    the transaction that marks the post failed and may return a sentence for the author."""

    message_id: int
    kind: str  # post | update | ephemeral
    channel: str
    ref: str | None
    author: str | None
    origin_channel: str | None
    error: str  # Slack's error code (or what went wrong)
    reason: str  # "Slack said not_in_channel"
    at: datetime


# --- telling the author ------------------------------------------------------------------------

# A hint for the author, by Slack's error code.
HINTS = {
    "not_in_channel": "invite the bot with /invite @revops",
    "channel_not_found": "the channel does not exist or the bot cannot see it; invite it with /invite @revops",
    "is_archived": "the channel is archived",
    "channel_is_archived": "the channel is archived",
    "msg_too_long": "the message was too long for Slack",
    "msg_blocks_too_long": "the message was too long for Slack",
    "invalid_blocks": "Slack refused the message's layout",
    "missing_scope": "the app lacks a permission; an admin must reinstall it from manifest.json",
    "restricted_action": "the workspace does not let the bot post there",
    "message_not_found": "the message to update is gone",
    "cant_update_message": "the message can no longer be updated",
}


def failure_words(kind: str, channel: str, author: str | None) -> str:
    """What was refused, without its article: "post to #C1", "message to U1"."""
    where = channel or "?"
    if kind == "update":
        return f"update of a message in #{where}"
    if kind == "ephemeral":
        return f"notice to {author} in #{where}"
    if where[:1] in "UW":
        return f"message to {where}"
    return f"post to #{where}"


def notice_text(kind: str, channel: str, author: str | None, code: str, reason: str, notes: list[str], *,
                automated: bool = False) -> str:
    """What the author (or, for an automated post, its owner) of a refused post reads (plain
    words, no Slack markup)."""
    hint = HINTS.get(code)
    whose = "The automated" if automated else "Your"
    text = f"{whose} {failure_words(kind, channel, author)} could not be delivered: {reason}" + \
        (f" ({hint})" if hint else "") + "."
    return " ".join([text, *notes])
