"""Channels through the Web API, for an incident's own channel (issue 19 item 5): create, invite,
set the topic, archive. The incidents family calls these through `services.extras["conversations"]`
(it knows no Slack); each raises the outbox's `SendError`, classified as for a post (bot/slack/client.py),
so the caller reads Slack's error code (`name_taken`, `missing_scope`, `restricted_action`…) and
whether it is worth another try. Scopes: `channels:manage` (public channels, which these are)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from ..settings import Settings
from .client import classify, make_web_client


class SlackConversations:
    def __init__(self, client: AsyncWebClient):
        self.client = client

    async def create(self, name: str) -> str:
        """A new public channel named `name`; its id."""
        try:
            resp = await self.client.conversations_create(name=name, is_private=False)
        except Exception as exc:
            raise classify(exc) from None
        return str((resp.get("channel") or {}).get("id") or "")

    async def invite(self, channel: str, users: list[str]) -> None:
        try:
            await self.client.conversations_invite(channel=channel, users=",".join(users))
        except Exception as exc:
            raise classify(exc) from None

    async def set_topic(self, channel: str, topic: str) -> None:
        try:
            await self.client.conversations_setTopic(channel=channel, topic=topic)
        except Exception as exc:
            raise classify(exc) from None

    async def archive(self, channel: str) -> None:
        try:
            await self.client.conversations_archive(channel=channel)
        except Exception as exc:
            raise classify(exc) from None


def slack_conversations(settings: Settings) -> SlackConversations | None:
    """The Web API's channels with the bot token, or None without one (the console, tests without Slack)."""
    if settings.env.slack_bot_token is None:
        return None
    return SlackConversations(make_web_client(settings))
