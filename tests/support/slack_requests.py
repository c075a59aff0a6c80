"""Slack requests signed with the signing secret, as Slack sends them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import urlencode


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = f"v0:{ts}:{body}".encode()
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"}


def slash_body(text: str, *, user: str, channel: str, response_url: str, command: str = "/revops") -> str:
    return urlencode({
        "token": "legacy-verification-token-unused",
        "team_id": "T0TEST",
        "team_domain": "revops-test",
        "channel_id": channel,
        "channel_name": "incident",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "A0REVOPS",
        "response_url": response_url,
        "trigger_id": uuid.uuid4().hex,
    })


def block_actions_body(action_id: str, value: str, *, user: str, channel: str, response_url: str,
                       message_ts: str = "1700000000.000100") -> str:
    payload = {
        "type": "block_actions",
        "team": {"id": "T0TEST", "domain": "revops-test"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0TEST"},
        "api_app_id": "A0REVOPS",
        "token": "legacy-verification-token-unused",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": uuid.uuid4().hex,
        "channel": {"id": channel, "name": "incident"},
        "message": {"type": "message", "ts": message_ts, "text": "…"},
        "response_url": response_url,
        "actions": [{
            "action_id": action_id, "block_id": "b1", "value": value, "type": "button",
            "action_ts": f"{time.time():.6f}", "text": {"type": "plain_text", "text": "x"},
        }],
    }
    return urlencode({"payload": json.dumps(payload)})


def event_body(event: dict, *, event_id: str | None = None) -> tuple[str, dict[str, str]]:
    body = {
        "token": "legacy-verification-token-unused",
        "team_id": "T0TEST",
        "api_app_id": "A0REVOPS",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [{"team_id": "T0TEST", "user_id": "U0BOT", "is_bot": True}],
    }
    return json.dumps(body), {"Content-Type": "application/json"}
