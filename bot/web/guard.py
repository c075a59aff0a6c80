"""What keeps the HTTP server from being held open or fed garbage, in two parts that share one
`ConnectionGuard`:

* `ConnectionGuard.protocol()`: uvicorn's own HTTP/1.1 protocol (h11), wrapped. uvicorn's public
  `Config` has a keep-alive timeout, a header size bound (`h11_max_incomplete_event_size`) and
  `limit_concurrency` (which answers 503 but still holds every connection), but no time limit on
  a request's headers: a client that sends half a request line and then one byte a minute holds
  its connection, and its file descriptor, forever. The wrapper arms a timer when a connection
  opens and again when a response is complete; the ASGI side (`RequestGuard`) cancels it when
  uvicorn hands it a request, which uvicorn does once the headers are complete. A timer that
  fires closes the connection (408 if part of a request came). Past `max_connections` open
  connections a new one is answered 503 and closed at once, before any file descriptor can run
  out. The wrapped protocol is used only through its public asyncio `Protocol` methods.
* `RequestGuard` (plain ASGI): reads the body before the app does, within `body_timeout`
  (408) and the endpoint's size limit (413); a client gone mid-body is dropped quietly; a Slack
  request with a malformed timestamp or signature, a body that is not UTF-8 or not a Slack
  payload, or a bad signature is answered 401/400 in words before bolt parses it; every
  response gets the security headers (`SECURITY_HEADERS`, and a CSP on HTML).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from slack_sdk.signature import SignatureVerifier
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..sizes import DEFAULT_BODY_LIMITS, KIB, parse_body_limits

log = logging.getLogger("revops.web")

SLACK_PATH = "/slack/events"

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # signed links must never leave in a Referer
    (b"x-frame-options", b"DENY"),
]
# The pages have no scripts: nothing may run, load from elsewhere, frame them or post a form.
PAGE_CSP = (b"content-security-policy",
            b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; "
            b"form-action 'none'; frame-ancestors 'none'")

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float = 10.0  # seconds for a request's headers (from connect, or the last response)
    body_timeout: float = 20.0  # seconds for a request's whole body
    keepalive_timeout: float = 5.0  # an idle kept-alive connection is closed after it (uvicorn's)
    max_connections: int = 2048
    max_header_bytes: int = 16 * KIB  # uvicorn's h11_max_incomplete_event_size
    body_limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BODY_LIMITS))

    @classmethod
    def from_settings(cls, env) -> "HttpLimits":
        return cls(header_timeout=env.revops_header_timeout.total_seconds(),
                   body_timeout=env.revops_body_timeout.total_seconds(),
                   keepalive_timeout=env.revops_keepalive_timeout.total_seconds(),
                   max_connections=env.revops_max_connections,
                   body_limits=parse_body_limits(env.revops_body_limits))

    def body_limit(self, path: str) -> int:
        return self.body_limits.get(path, self.body_limits["*"])


class Throttled:
    """Say something at most once a second, with how many times it was not said."""

    def __init__(self, logger: logging.Logger, every: float = 1.0):
        self.logger, self.every = logger, every
        self.last, self.skipped = 0.0, 0

    def warning(self, message: str, *args) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.skipped += 1
            return
        suffix = f" ({self.skipped} more like it in the last second)" if self.skipped else ""
        self.last, self.skipped = now, 0
        self.logger.warning(message + suffix, *args)


class ConnectionGuard:
    """The open connections of one server, by peer address, and their header timers."""

    def __init__(self, limits: HttpLimits):
        self.limits = limits
        self.open: dict[Any, "GuardedConnection"] = {}
        self.full = Throttled(log)
        self.timeouts = 0  # connections closed for a header timeout (tests, metrics)

    def protocol(self) -> type[asyncio.Protocol]:
        """The protocol class to give uvicorn's `Config(http=...)`."""
        guard = self

        class Guarded(GuardedConnection):
            def __init__(self, **kwargs):
                super().__init__(guard, H11Protocol(**kwargs))

        return Guarded

    def request_started(self, scope) -> "GuardedConnection | None":
        conn = self.open.get(_peer(scope.get("client")))
        if conn is not None:
            conn.disarm()
        return conn


def _peer(address) -> Any:
    return tuple(address[:2]) if address else None


class GuardedConnection(asyncio.Protocol):
    """uvicorn's protocol for one connection, with a time limit on every request's headers."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol):
        self.guard, self.inner = guard, inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.peer = None
        self.partial = False  # bytes of a request came since the timer was armed
        self.refused = False

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        if len(self.guard.open) >= self.guard.limits.max_connections:
            self.refused = True
            self.guard.full.warning("connection limit reached (%d open): new connections are refused",
                                    len(self.guard.open))
            transport.write(_plain(503, "Service Unavailable", "revops has too many open connections; try again"))
            transport.close()
            return
        self.peer = _peer(transport.get_extra_info("peername"))
        self.guard.open[self.peer] = self
        self.arm(self.guard.limits.header_timeout)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.timer is not None:
            self.partial = True
        self.inner.data_received(data)

    def eof_received(self):
        if self.refused:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc) -> None:
        self.disarm()
        if self.refused:
            return
        if self.guard.open.get(self.peer) is self:
            del self.guard.open[self.peer]
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    # --- the header timer ------------------------------------------------------------------
    def arm(self, seconds: float) -> None:
        self.disarm()
        self.partial = False
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def response_complete(self) -> None:
        """The next request's headers are due within the keep-alive time plus the header time."""
        if self.transport is not None and not self.transport.is_closing():
            self.arm(self.guard.limits.keepalive_timeout + self.guard.limits.header_timeout)

    def _expired(self) -> None:
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        self.guard.timeouts += 1
        if self.partial:
            self.transport.write(_plain(408, "Request Timeout", "the request's headers did not arrive in time"))
        self.transport.close()


def _plain(status: int, reason: str, text: str) -> bytes:
    body = (text + "\n").encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class RequestGuard:
    """Plain ASGI middleware (see the module's docstring)."""

    def __init__(self, app, *, guard: ConnectionGuard, signing_secret: Callable[[], str | None]):
        self.app = app
        self.guard = guard
        self.limits = guard.limits
        self.signing_secret = signing_secret

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = self.guard.request_started(scope)
        send = _guarded_send(send, conn)
        headers = scope["headers"]
        length = _header(headers, b"content-length")
        if length is None and _header(headers, b"transfer-encoding") is None:
            await self.app(scope, receive, send)  # no body (GET, HEAD…)
            return
        path = scope["path"]
        limit = self.limits.body_limit(path)
        if length is not None and (not length.isdigit() or len(length) > 15 or int(length) > limit):
            await _answer(send, 413, f"the body is larger than {limit:,} bytes, the limit for {path[:60]}")
            return
        body = await self._read_body(receive, send, limit, path)
        if body is None:
            return
        if scope["method"] == "POST" and path == SLACK_PATH:
            problem = self._slack_problem(headers, body)
            if problem is not None:
                await _answer(send, *problem)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive, send, limit: int, path: str) -> bytes | None:
        """The whole body, or None once it has been answered (or the client has gone)."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        log.info("client went away before sending the whole body of %s", path[:60])
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await _answer(send, 413, f"the body is larger than {limit:,} bytes, the limit for {path[:60]}")
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            log.info("the body of %s did not arrive within %.0fs", path[:60], self.limits.body_timeout)
            await _answer(send, 408, f"the request body did not arrive within {self.limits.body_timeout:g} s")
            return None

    def _slack_problem(self, headers, body: bytes) -> tuple[int, str] | None:
        """What is wrong with a request to the Slack endpoint before bolt sees it, in words."""
        secret = self.signing_secret()
        if secret is None:
            return None  # not configured: the Slack route answers 503 itself
        timestamp = _header(headers, b"x-slack-request-timestamp")
        signature = _header(headers, b"x-slack-signature")
        if not timestamp or not signature:
            return 401, "a Slack request needs X-Slack-Request-Timestamp and X-Slack-Signature"
        if not _TIMESTAMP.fullmatch(timestamp):
            return 401, "X-Slack-Request-Timestamp must be a Unix time in whole seconds"
        if not _SIGNATURE.fullmatch(signature):
            return 401, "X-Slack-Signature must be v0= and 64 hexadecimal digits"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return 400, "the body is not UTF-8"
        if not SignatureVerifier(secret).is_valid(text, timestamp, signature):
            return 401, "the Slack signature does not match, or the request is older than 5 minutes"
        if not _slack_payload(text, _header(headers, b"content-type")):
            return 400, "the body is not a Slack payload (a form, or a JSON object)"
        return None


def _slack_payload(text: str, content_type: str | None) -> bool:
    """Whether bolt and the listeners can read it: what bolt's `parse_body` parses must be a JSON
    object, shaped as Slack shapes its payloads (a signed body can still be malformed: a
    leaked secret, a bug upstream)."""
    try:
        if content_type == "application/json" or text.startswith("{"):
            return _slack_shaped(json.loads(text))
        if "payload" in text:
            payload = dict(parse_qsl(text, keep_blank_values=True)).get("payload")
            return payload is None or _slack_shaped(json.loads(payload))
        return True
    except (ValueError, RecursionError):
        return False


_OBJECTS = ("user", "channel", "container", "team", "view", "message", "enterprise", "event", "authorizations")
_STRINGS = ("type", "trigger_id", "response_url", "api_app_id", "token", "event_id", "team_id", "callback_id")


def _slack_shaped(value) -> bool:
    """A JSON object whose keys Slack always sends as objects or strings are objects or strings;
    an interaction names its user, and its actions are objects with string ids and values."""
    if not isinstance(value, dict):
        return False
    if any(key in value and not isinstance(value[key], (dict, list) if key == "authorizations" else dict)
           for key in _OBJECTS):
        return False
    if any(key in value and not isinstance(value[key], str) for key in _STRINGS):
        return False
    event = value.get("event")
    if event is not None and any(key in event and not isinstance(event[key], str)
                                 for key in ("type", "user", "channel", "text", "ts", "thread_ts")):
        return False
    if value.get("type") in ("block_actions", "view_submission", "shortcut", "message_action", "block_suggestion"):
        user = value.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            return False
    actions = value.get("actions", [])
    if value.get("type") == "block_actions" and not actions:
        return False  # Slack sends the action clicked (bolt reads the first)
    return isinstance(actions, list) and all(
        isinstance(a, dict) and all(isinstance(a.get(key, ""), str) for key in ("action_id", "value", "block_id"))
        for a in actions)


def _header(headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1").strip()
    return None


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _guarded_send(send, conn: GuardedConnection | None):
    async def guarded(message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            names = {key.lower() for key, _ in headers}
            headers += [h for h in SECURITY_HEADERS if h[0] not in names]
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            if content_type.startswith(b"text/html") and PAGE_CSP[0] not in names:
                headers.append(PAGE_CSP)
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body" and not message.get("more_body", False) and conn is not None:
            conn.response_complete()
        await send(message)

    return guarded


async def _answer(send, status: int, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def server_config(app, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration for `revops serve`: the app's connection guard as its protocol,
    the keep-alive timeout and header size bound, and logs left to the root logger (JSON, with
    the secrets redacted: `bot.logs`) instead of uvicorn's own handlers."""
    guard: ConnectionGuard = app.state.connection_guard
    limits = guard.limits
    return uvicorn.Config(app, host=host, port=port, http=guard.protocol(), log_config=None, log_level="warning",
                          access_log=False, timeout_keep_alive=max(1, round(limits.keepalive_timeout)),
                          h11_max_incomplete_event_size=limits.max_header_bytes, lifespan="on")
