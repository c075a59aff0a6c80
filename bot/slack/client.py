"""The Slack Web API client (honours SLACK_API_URL, retries 429 after Retry-After, 5xx and
network errors a few times) and the outbox sender that posts through it.

What Slack answers is classified for the outbox (SPEC §10): retryable (429, 5xx, the network,
Slack's own transient errors) — the post is tried again later, in order; a dead token — sending
pauses; anything else, including an error this code does not know, is permanent — the post
fails at once with Slack's reason and its author is told (a day of retries behind one refused
post would hold back every later post to its channel)."""

from __future__ import annotations

from datetime import datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from ..outbox import PAUSE, PERMANENT, RETRY, FileReply, SendError
from ..names import Names
from ..reply import Reply
from ..settings import Settings
from .blocks import fallback_text, render_blocks

METADATA_EVENT = "revops_post"  # the message metadata naming a post's outbox id
HISTORY_PAGES = 5  # pages of 200 messages searched for a post before it is sent again

# Slack's transient errors: worth another try later.
RETRYABLE = frozenset({"ratelimited", "rate_limited", "service_unavailable", "fatal_error", "request_timeout",
                       "internal_error", "timeout"})
# The token itself is dead: every call would fail the same way until it is replaced.
TOKEN_DEAD = frozenset({"token_revoked", "invalid_auth", "not_authed", "account_inactive", "token_expired"})
# Known permanent errors (for the record: any error not in the two sets above is permanent too).
PERMANENT_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "channel_is_archived", "msg_too_long",
    "msg_blocks_too_long", "invalid_blocks", "invalid_blocks_format", "missing_scope", "message_not_found",
    "cant_update_message", "edit_window_closed", "restricted_action", "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel", "no_text", "invalid_arguments", "team_access_not_granted",
    "user_not_in_channel", "user_not_found", "cannot_dm_bot", "too_many_attachments", "duplicate_channel_not_found",
    "not_allowed_token_type", "ekm_access_denied", "is_inactive",
})


def make_web_client(settings: Settings, rate_limit_retries: int = 5) -> AsyncWebClient:
    """The Web API client. `rate_limit_retries=0` for the outbox's sender: a 429 goes back to the
    outbox, which sleeps that channel alone for Retry-After (the client would hold the send)."""
    token = settings.env.slack_bot_token.get_secret_value() if settings.env.slack_bot_token else None
    return AsyncWebClient(
        token=token,
        base_url=settings.env.slack_api_url,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            *([AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries)] if rate_limit_retries else []),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def classify(exc: Exception) -> SendError:
    """What a failed Web API call means for the post (the client's own retries are over)."""
    if not isinstance(exc, SlackApiError):
        return SendError(f"Slack is unreachable ({type(exc).__name__})", action=RETRY, code="unreachable")
    response = exc.response
    status = getattr(response, "status_code", 200) if response is not None else 200
    try:
        error = str(response.get("error") or "") if response is not None else ""
    except Exception:  # a body that is not Slack's JSON (a proxy's error page)
        error = ""
    error = "".join(ch for ch in error if ch.isalnum() or ch in "_-.")[:60] or f"HTTP {status}"
    if status == 429 or status >= 500 or error in RETRYABLE:
        retry_after = None
        try:
            retry_after = float(response.headers.get("Retry-After") or response.headers.get("retry-after") or 0) or None
        except Exception:  # no headers, or not a number
            retry_after = None
        return SendError(f"Slack said {error}", action=RETRY, code=error, retry_after=retry_after)
    if error in TOKEN_DEAD:
        return SendError(f"Slack said {error}", action=PAUSE, code=error)
    return SendError(f"Slack said {error}", action=PERMANENT, code=error)


class SlackSender:
    """`names`: display names for the people a post shows without notifying them (bot/names.py)."""

    def __init__(self, client: AsyncWebClient, names: Names | None = None):
        self.client = client
        self.names = names

    async def _names(self, reply: Reply) -> dict[str, str]:
        return await self.names.resolve(reply.users(quiet_only=True)) if self.names is not None else {}

    async def post(self, channel: str, reply: Reply, thread_ts: str | None, outbox_id: int | None = None) -> str:
        metadata = None
        if outbox_id is not None:  # how `find_post` knows the post again after a crash
            metadata = {"event_type": METADATA_EVENT, "event_payload": {"outbox_id": outbox_id}}
        names = await self._names(reply)
        try:
            resp = await self.client.chat_postMessage(channel=channel, text=fallback_text(reply, names),
                                                      blocks=render_blocks(reply, names), thread_ts=thread_ts,
                                                      metadata=metadata)
        except Exception as exc:
            raise classify(exc) from None
        return resp["ts"]

    async def upload(self, channel: str, reply: FileReply, thread_ts: str | None) -> str:
        """A file in the channel, the reply as its comment: slack_sdk's files_upload_v2 makes Slack's
        external upload (files.getUploadURLExternal, the POST to the URL it returns,
        files.completeUploadExternal; files:write). Returns the file's id."""
        names = await self._names(reply)
        try:
            resp = await self.client.files_upload_v2(channel=channel, content=reply.content.encode("utf-8"),
                                                     filename=reply.filename, title=reply.title or reply.filename,
                                                     initial_comment=fallback_text(reply, names), thread_ts=thread_ts)
        except Exception as exc:
            raise classify(exc) from None
        return str((resp.get("file") or {}).get("id") or "")

    async def find_post(self, channel: str, outbox_id: int, oldest: datetime) -> str | None:
        """The ts of the bot's message carrying `outbox_id` posted in `channel` since `oldest`
        (conversations.history: channels:history / groups:history), else None."""
        cursor = None
        for _ in range(HISTORY_PAGES):
            resp = await self.client.conversations_history(channel=channel, oldest=f"{oldest.timestamp():.6f}",
                                                           limit=200, include_all_metadata=True, cursor=cursor)
            for message in resp.get("messages") or []:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") == METADATA_EVENT and str(payload.get("outbox_id")) == str(outbox_id):
                    return message.get("ts")
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None
        return None

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
        names = await self._names(reply)
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=fallback_text(reply, names),
                                          blocks=render_blocks(reply, names))
        except Exception as exc:
            raise classify(exc) from None

    async def ephemeral(self, channel: str, user: str, reply: Reply) -> None:
        names = await self._names(reply)
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=fallback_text(reply, names),
                                                 blocks=render_blocks(reply, names))
        except Exception as exc:
            raise classify(exc) from None

    async def token_works(self) -> bool:
        """auth.test with the token: whether a paused outbox may send again."""
        try:
            await self.client.auth_test()
        except Exception:
            return False
        return True
