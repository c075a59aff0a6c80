"""The Slack side of display names: `users.info` (scope `users:read`)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from ..names import Lookup


def users_info_lookup(client: AsyncWebClient) -> Lookup:
    async def lookup(user_id: str) -> str | None:
        response = await client.users_info(user=user_id)
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        return (profile.get("display_name") or profile.get("real_name") or user.get("real_name")
                or user.get("name") or None)

    return lookup
