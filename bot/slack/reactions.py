"""📌 to the timeline (issue 19 item 3): `reaction_added` / `reaction_removed` of the
`[incidents] pin_emoji` on a message.

bolt acknowledges the event when the listener returns, at once: the work is a follow-up
(`Followups`). Added: when the family that keeps pins (`services.extras["pins"]`, a
`bot.pins.PinKeeper`) wants the channel, the message is read from Slack — `conversations.history`
(latest = its ts, inclusive, limit 1), or `conversations.replies` for a reply in a thread, which
is not in the channel's history — with its permalink (`chat.getPermalink`), then handed over as a
`PinnedMessage` with its text as plain data. Removed: when the message is pinned and
`reactions.get` shows no pin reaction left on it, it is taken off. Every Slack read happens before
the keeper's transaction; a read that fails is logged at WARNING, in words, and nothing is changed.
"""

from __future__ import annotations

import html
import logging
import re
from datetime import datetime, timezone

from ..pins import PinnedMessage
from .client import classify

log = logging.getLogger("revops.slack.reactions")

REPLIES_LIMIT = 10  # the thread's parent and the reply asked for (oldest = latest = its ts)

_TOKEN = re.compile(r"<([^<>]*)>")
_TS = re.compile(r"(\d{1,12})(?:\.(\d{1,6}))?")


def message_time(ts: str) -> datetime | None:
    """A Slack ts as the time it names (UTC, to the microsecond; no float rounding)."""
    match = _TS.fullmatch(ts or "")
    if not match:
        return None
    seconds, fraction = int(match.group(1)), (match.group(2) or "").ljust(6, "0")
    return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=int(fraction))


def _token_text(token: str) -> str:
    target, _, label = token.partition("|")
    if target.startswith("@"):  # <@U123> or <@U123|ada>
        return "@" + (label or target[1:])
    if target.startswith("#"):  # <#C123|general>
        return "#" + (label or target[1:])
    if target.startswith("!"):  # <!channel>, <!here>, <!subteam^S1|@team>, <!date^…|fallback>
        if label:
            return label
        return "@" + target[1:].split("^", 1)[0]
    return f"{label} ({target})" if label and label != target else target  # <https://…|label>


def plain_text(mrkdwn: str) -> str:
    """A Slack message's text as a person reads it, as plain data: mentions, channel links,
    broadcasts and links become their plain reading (`<!channel>` → "@channel"), `&lt;` `&gt;`
    `&amp;` come back as typed; formatting marks stay as typed characters."""
    return html.unescape(_TOKEN.sub(lambda m: _token_text(m.group(1)), mrkdwn or "")) if mrkdwn else ""


def is_message_reaction(event: dict, emoji: str) -> bool:
    item = event.get("item") if isinstance(event, dict) else None
    return (isinstance(item, dict) and item.get("type") == "message" and event.get("reaction") == emoji
            and isinstance(item.get("channel"), str) and isinstance(item.get("ts"), str) and bool(item["channel"])
            and message_time(item["ts"]) is not None and isinstance(event.get("user"), str))


def register(app, services, router, followups, client) -> None:
    def keeper():
        return services.extras.get("pins")

    def emoji() -> str:
        return services.settings.cfg.incidents.pin_emoji

    @app.event("reaction_added")
    async def on_reaction_added(event):
        if keeper() is not None and is_message_reaction(event, emoji()):
            followups.start(pin(event))

    @app.event("reaction_removed")
    async def on_reaction_removed(event):
        if keeper() is not None and is_message_reaction(event, emoji()):
            followups.start(unpin(event))

    async def read_message(channel: str, ts: str) -> dict | None:
        """The message (its history entry, or its thread reply); None when Slack has no such message."""
        history = await client.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1)
        for message in history.get("messages") or []:
            if message.get("ts") == ts:
                return message
        thread = await client.conversations_replies(channel=channel, ts=ts, latest=ts, oldest=ts, inclusive=True,
                                                    limit=REPLIES_LIMIT)
        for message in thread.get("messages") or []:
            if message.get("ts") == ts:
                return message
        return None

    async def pin(event: dict) -> None:
        item = event["item"]
        channel, ts, by = item["channel"], item["ts"], event["user"]
        pins = keeper()
        if not await pins.wants(services, channel):
            return  # no open incident there: nothing is read from Slack
        try:
            message = await read_message(channel, ts)
            if message is None:
                log.warning("a message pinned in %s could not be found in its history or thread; not pinned",
                            channel)
                return
            link = (await client.chat_getPermalink(channel=channel, message_ts=ts)).get("permalink")
        except Exception as exc:
            log.warning("could not read a message pinned in %s from Slack (%s); it is not on the timeline",
                        channel, classify(exc))
            return
        author = message.get("user") or message.get("bot_id") or message.get("username") or "unknown"
        thread = message.get("thread_ts")
        pinned = PinnedMessage(
            channel=channel, ts=ts, at=message_time(ts), author=str(author)[:64], text=plain_text(message.get("text")),
            permalink=link if isinstance(link, str) and link.startswith("https://") else None,
            thread_ts=thread if isinstance(thread, str) and thread != ts else None,
        )
        if await pins.add(services, pinned, by):
            log.info("a message in %s was pinned to the timeline", channel)

    async def unpin(event: dict) -> None:
        item = event["item"]
        channel, ts, by = item["channel"], item["ts"], event["user"]
        pins = keeper()
        if not await pins.pinned(services, channel, ts):
            return
        try:
            found = await client.reactions_get(channel=channel, timestamp=ts, full=True)
        except Exception as exc:
            log.warning("could not read the reactions of a pinned message in %s from Slack (%s); it stays on the "
                        "timeline", channel, classify(exc))
            return
        reactions = (found.get("message") or {}).get("reactions") or []
        if any(r.get("name") == emoji() and (r.get("count") or len(r.get("users") or [])) for r in reactions):
            return  # someone else's pin reaction is still on it
        if await pins.remove(services, channel, ts, by):
            log.info("a message in %s was taken off the timeline (no pin reaction left)", channel)
