"""📌 to the timeline (issue 19 item 3): a message pinned with the `[incidents] pin_emoji` reaction
in a channel with an open incident is on that incident's timeline once, at the message's own
time, with its author, text (plain data) and permalink; it comes off when no pin reaction is
left on the message.

The Slack adapter (bot/slack/reactions.py) reads the message from Slack before it calls `add`;
each function here is one short transaction with no network inside. `PINS` is what the family
hands the adapter (bot/incidents/family.py)."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from .. import audit
from ..errors import NotFound
from ..pins import PinKeeper, PinnedMessage
from . import service
from .models import Incident, TimelineEntry

KIND = "pin"
PREFIX = "Pinned message: "

_ENTRIES, _INCIDENTS = TimelineEntry.__table__, Incident.__table__
_PINNED = (select(_ENTRIES.c.id)
           .join(_INCIDENTS, _INCIDENTS.c.id == _ENTRIES.c.incident_id)
           .where(_INCIDENTS.c.open_channel == bindparam("channel"), _ENTRIES.c.source_ts == bindparam("ts"),
                  _ENTRIES.c.kind == KIND))


def entry_text(message: PinnedMessage) -> str:
    """What the timeline says of a pinned message: its text, as typed (plain data)."""
    return PREFIX + (message.text if message.text.strip() else "(a message without text)")


async def _open_incident(session, channel: str) -> Incident | None:
    try:
        return await service.find_incident(session, channel, None, lock=True)  # the incident row first
    except NotFound:
        return None


async def wants(services, channel: str) -> bool:
    """Whether the channel has an open incident (before anything is read from Slack)."""
    async with services.db.reading() as session:
        return await service.open_incident_in(session, channel) is not None


async def pinned(services, channel: str, ts: str) -> bool:
    """Whether the message is on the timeline of the channel's open incident."""
    async with services.db.reading() as session:
        return (await session.rows(_PINNED, {"channel": channel, "ts": ts})).first() is not None


async def add(services, message: PinnedMessage, by: str) -> bool:
    """Put the message on the timeline of its channel's open incident; False when there is none
    or the message is there already (whoever pinned it first)."""
    now = services.clock.now()
    async with services.db.transaction() as session:
        incident = await _open_incident(session, message.channel)
        if incident is None:
            return False
        exists = (await session.execute(select(TimelineEntry.id).where(
            TimelineEntry.incident_id == incident.id, TimelineEntry.source_ts == message.ts))).first()
        if exists is not None:
            return False
        entry = TimelineEntry(
            incident_id=incident.id, at=message.at, kind=KIND, actor=message.author, text=entry_text(message),
            source_ts=message.ts, source_permalink=message.permalink,
            data={"text": message.text, "pinned_by": by, "channel": message.channel, "ts": message.ts,
                  "thread_ts": message.thread_ts, "permalink": message.permalink},
        )
        try:
            async with session.begin_nested():
                session.add(entry)
                await session.flush()
        except IntegrityError:
            return False  # pinned at the same moment by someone else: it is there once
        await audit.append(session, at=now, actor=by, command="incident pin",
                           args={"channel": message.channel, "ts": message.ts}, outcome="ok",
                           channel=message.channel, surface="slack", subject=f"incident:{incident.id}",
                           detail=f"pinned a message of {message.author} to the timeline of #{incident.id}")
    return True


async def remove(services, channel: str, ts: str, by: str) -> bool:
    """Take the message off the timeline of the channel's open incident; False when it was not on it."""
    now = services.clock.now()
    async with services.db.transaction() as session:
        incident = await _open_incident(session, channel)
        if incident is None:
            return False
        gone = await session.execute(delete(TimelineEntry).where(
            TimelineEntry.incident_id == incident.id, TimelineEntry.source_ts == ts, TimelineEntry.kind == KIND))
        if not gone.rowcount:
            return False
        await audit.append(session, at=now, actor=by, command="incident unpin", args={"channel": channel, "ts": ts},
                           outcome="ok", channel=channel, surface="slack", subject=f"incident:{incident.id}",
                           detail=f"no pin reaction left: the message is off the timeline of #{incident.id}")
    return True


PINS = PinKeeper(wants=wants, pinned=pinned, add=add, remove=remove)
