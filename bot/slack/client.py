"""The Slack Web API client (honours SLACK_API_URL, retries 429 after Retry-After)
and the outbox sender that posts through it."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from ..outbox import SendError
from ..reply import Reply
from ..settings import Settings
from .blocks import fallback_text, render_blocks

# Errors that retrying cannot fix: the post is marked failed instead.
_PERMANENT = {"channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "msg_too_long",
              "invalid_auth", "account_inactive", "no_text", "message_not_found", "cant_update_message"}


def make_web_client(settings: Settings) -> AsyncWebClient:
    token = settings.env.slack_bot_token.get_secret_value() if settings.env.slack_bot_token else None
    return AsyncWebClient(
        token=token,
        base_url=settings.env.slack_api_url,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=5),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class SlackSender:
    def __init__(self, client: AsyncWebClient):
        self.client = client

    async def post(self, channel: str, reply: Reply, thread_ts: str | None) -> str:
        try:
            resp = await self.client.chat_postMessage(channel=channel, text=fallback_text(reply),
                                                      blocks=render_blocks(reply), thread_ts=thread_ts)
        except SlackApiError as exc:
            error = exc.response.get("error", "error") if exc.response is not None else "error"
            raise SendError(f"Slack said {error}", retry=error not in _PERMANENT) from None
        except Exception as exc:
            raise SendError(f"Slack is unreachable ({type(exc).__name__})") from None
        return resp["ts"]

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=fallback_text(reply),
                                          blocks=render_blocks(reply))
        except SlackApiError as exc:
            error = exc.response.get("error", "error") if exc.response is not None else "error"
            raise SendError(f"Slack said {error}", retry=error not in _PERMANENT) from None
        except Exception as exc:
            raise SendError(f"Slack is unreachable ({type(exc).__name__})") from None
