"""A running bot: settings pointing at the fake Slack, uvicorn on loopback, signed-request helpers."""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from sqlalchemy import func, select

from bot.db import Database
from bot.deliveries import read_state as read_slack_state
from bot.models import OutgoingMessage
from bot.settings import Settings, load_settings
from bot.app import create_app

from .fake_slack import FakeSlack
from .server import LiveServer
from .slack_requests import block_actions_body, event_body, sign, slash_body

SIGNING_SECRET = "test-signing-secret-9f8e7d6c5b4a"
BOT_TOKEN = "xoxb-test-token-1234567890-abcdef"
ADMIN_KEY = "admin-key-test-5c6d7e8f9a0b"
ALERTS_TOKEN = "alerts-token-test-1a2b3c4d"
STRIPE_KEY = "sk_test_revops_1234567890abcdef"
WEBHOOK_SECRET = "whsec_test_revops_abcdef123456"

SECRETS = [SIGNING_SECRET, BOT_TOKEN, ADMIN_KEY, ALERTS_TOKEN, STRIPE_KEY, WEBHOOK_SECRET]

ROLES_TOML = """
[slack]
incident_channel = "C0INCIDENT"
alerts_channel = "C0ALERTS"

[roles]
admin = ["U0ADMIN"]
approver = ["U0APPROVER", "U0APPROVER2"]
responder = ["U0RESPONDER", "U0RESPONDER2"]
"""

ADMIN, APPROVER, APPROVER2, RESPONDER, VIEWER = "U0ADMIN", "U0APPROVER", "U0APPROVER2", "U0RESPONDER", "U0VIEWER"
CHANNEL = "C0INCIDENT"


def make_settings(tmp_path: Path, database_url: str, slack_api_url: str, extra_toml: str = "",
                  **env) -> Settings:
    config = tmp_path / "revops.toml"
    config.write_text(ROLES_TOML + extra_toml)
    values = dict(
        database_url=database_url,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack_api_url,
        stripe_secret_key=STRIPE_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        revops_admin_api_key=ADMIN_KEY,
        revops_alerts_token=ALERTS_TOKEN,
        revops_config=str(config),
        revops_base_url="http://revops.test",
        revops_post_interval="0.05s",  # tests that check the per-channel pacing set their own
    )
    values.update(env)
    return load_settings(**values)


class Bot:
    """A live revops server plus the helpers a test needs to talk to it as Slack would."""

    def __init__(self, settings: Settings, slack: FakeSlack, **app_kwargs):
        self.settings = settings
        self.slack = slack
        self.app = create_app(settings, **app_kwargs)
        self.server = LiveServer(self.app)
        self.url = self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self._responses = 0

    def start(self) -> "Bot":
        self.server.start()
        return self

    def stop(self) -> None:
        self.http.close()
        self.server.stop()

    @property
    def runtime(self):
        return self.app.state.runtime

    def response_url(self) -> str:
        self._responses += 1
        return self.slack.response_url(f"r{self._responses}")

    def post_signed(self, body: str, headers: dict[str, str] | None = None, *, secret: str = SIGNING_SECRET,
                    timestamp: int | None = None, extra: dict[str, str] | None = None) -> httpx.Response:
        signed = sign(secret, body, timestamp)
        if headers:
            signed.update({k: v for k, v in headers.items() if k.lower() == "content-type"})
        signed.update(extra or {})
        return self.http.post("/slack/events", content=body, headers=signed)

    def slash(self, text: str, *, user: str = ADMIN, channel: str = CHANNEL, response_url: str | None = None,
              **kw) -> httpx.Response:
        body = slash_body(text, user=user, channel=channel, response_url=response_url or self.response_url())
        return self.post_signed(body, **kw)

    def answer_text(self, text: str, **kw) -> str:
        """The answer, flattened: the acknowledgement's, or — when the bot acknowledged with
        "Working on it…" (a loaded machine can take past the ack budget) — the response_url's."""
        url = self.response_url()
        response = self.slash(text, response_url=url, **kw)
        assert response.status_code == 200, response.text
        answer = flatten(response.json())
        return flatten(self.wait_response(url)) if "Working on it" in answer else answer

    def slash_text(self, text: str, **kw) -> str:
        """The acknowledgement's text and blocks, flattened (fails on a non-200)."""
        response = self.slash(text, **kw)
        assert response.status_code == 200, response.text
        return flatten(response.json())

    def click(self, action_id: str, value: str, *, user: str, channel: str = CHANNEL,
              response_url: str | None = None, message_ts: str = "1700000000.000100") -> tuple[httpx.Response, str]:
        url = response_url or self.response_url()
        body = block_actions_body(action_id, value, user=user, channel=channel, response_url=url,
                                  message_ts=message_ts)
        return self.post_signed(body), url

    def click_and_wait(self, action_id: str, value: str, *, user: str, channel: str = CHANNEL,
                       timeout: float = 10) -> dict:
        response, url = self.click(action_id, value, user=user, channel=channel)
        assert response.status_code == 200, response.text
        return self.wait_response(url, timeout=timeout)

    def wait_response(self, url: str, timeout: float = 10) -> dict:
        key = url.rsplit("/", 1)[-1]
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [c for c in self.slack.responses_list() if c.key == key]
            if found:
                return found[-1].params
            time.sleep(0.02)
        raise AssertionError(f"no response posted to {url}")

    def event(self, event: dict, *, event_id: str | None = None, retry_num: int | None = None) -> httpx.Response:
        body, headers = event_body(event, event_id=event_id)
        extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"} if retry_num else None
        return self.post_signed(body, headers, extra=extra)

    def admin_get(self, path: str) -> httpx.Response:
        return self.http.get(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    @asynccontextmanager
    async def db(self):
        """A separate connection to the bot's database, for looking inside."""
        database = Database(self.settings.env.database_url)
        try:
            yield database
        finally:
            await database.dispose()

    # --- waiting for the work to be done, not for time to pass ----------------------------------
    async def _busy(self) -> str | None:
        """On the server's loop: what the bot still has to do for what it was asked (None when
        nothing): follow-ups after an acknowledgement (slow answers, click results, mentions)
        still running, or outbox posts due and not yet delivered. A post waiting out a back-off
        (its next attempt later on the bot's clock) is not due: advance the clock, then drain."""
        runtime = self.runtime
        followups = getattr(runtime.slack_app, "revops_followups", None)
        if followups is not None and followups.tasks:
            await followups.drain()
            return f"{len(followups.tasks)} follow-up(s) running"
        runtime.deliverer.kick()
        async with runtime.services.db.transaction() as s:
            if (await read_slack_state(s)).paused is not None:
                return None  # sending is paused (token revoked): pending posts wait, on purpose
            due = (await s.execute(select(func.count()).select_from(OutgoingMessage).where(
                OutgoingMessage.status == "pending",
                OutgoingMessage.next_attempt_at <= runtime.services.clock.now()))).scalar_one()
        return f"{due} outbox post(s) due and not delivered" if due else None

    async def drain(self, timeout: float = 10) -> None:
        """Wait until the bot is done with everything it was asked so far (see `_busy`); then an
        assertion that nothing (more) happened means it. Fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (busy := await asyncio.wrap_future(self.server.call(self._busy()))) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the bot was still busy after {timeout} s: {busy}")
            await asyncio.sleep(0.02)

    def drain_sync(self, timeout: float = 10) -> None:
        """`drain` for tests that are not coroutines."""
        deadline = time.monotonic() + timeout
        while (busy := self.server.call(self._busy()).result(timeout)) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the bot was still busy after {timeout} s: {busy}")
            time.sleep(0.02)

    async def wait_posts(self, count: int, timeout: float = 10) -> list:
        deadline = time.time() + timeout
        while time.time() < deadline:
            calls = self.slack.calls_of("chat.postMessage")
            if len(calls) >= count:
                return calls
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {count} chat.postMessage, got {len(self.slack.calls_of('chat.postMessage'))}")


def mrkdwn_texts(node) -> list[str]:
    """Every text of a Slack payload that Slack reads as mrkdwn, as sent (escaped, markup kept);
    plain_text objects (button labels, confirm dialogs) are shown as is by Slack and left out."""
    out: list[str] = []

    def walk(item):
        if isinstance(item, dict):
            if item.get("type") == "plain_text":
                return
            for key, value in item.items():
                if key == "text" and isinstance(value, str):
                    out.append(value)
                else:
                    walk(value)
        elif isinstance(item, list):
            for child in item:
                walk(child)

    walk(node)
    return out


def shown(text: str) -> str:
    """Slack mrkdwn as a person reads it: the three escaped characters and the inert formatting
    characters (bot/slack/blocks.py) back as typed; other tokens stay as they are."""
    text = re.sub(r"<!date\^00000000\^{_}\|(.)>", r"\1", text).replace("\u00ad&gt;", "&gt;")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def flatten(payload: dict) -> str:
    """Every piece of text in a Slack message payload, joined (for assertions)."""
    parts: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("text", "value", "action_id") and isinstance(value, str):
                    parts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(payload)
    return "\n".join(parts).replace("*", "").replace("`", "")
