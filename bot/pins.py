"""Messages pinned with a reaction (issue 19 item 3), as the core sees them: neutral data.

The Slack adapter (bot/slack/reactions.py) hears `reaction_added` / `reaction_removed` of the
`[incidents] pin_emoji`, reads the message from Slack (outside any transaction) and hands a
`PinnedMessage` to the family that keeps pins (`Family.pins`, a `PinKeeper`); the family
decides where it goes (the incidents family: the timeline of the channel's open incident).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable


@dataclass(frozen=True)
class PinnedMessage:
    channel: str
    ts: str  # the message's Slack ts: its identity in the channel, and its time
    at: datetime  # the message's own time (from its ts)
    author: str  # a user id, or a bot's id/name when a bot wrote it
    text: str  # plain text: data, never markup
    permalink: str | None
    thread_ts: str | None = None  # the thread's parent, for a reply in a thread


@dataclass(frozen=True)
class PinKeeper:
    """What a family that keeps pinned messages gives the Slack adapter.

    `wants(services, channel)`: whether a message of this channel may be pinned now (read only;
    the adapter asks before it reads anything from Slack). `pinned(services, channel, ts)`:
    whether that message is pinned. `add(services, message, by)` / `remove(services, channel,
    ts, by)`: each in its own short write transaction, no network inside; True when something
    changed (a second pin of the same message, or the removal of one not pinned, is False)."""

    wants: Callable[[Any, str], Awaitable[bool]]
    pinned: Callable[[Any, str, str], Awaitable[bool]]
    add: Callable[[Any, PinnedMessage, str], Awaitable[bool]]
    remove: Callable[[Any, str, str, str], Awaitable[bool]]
