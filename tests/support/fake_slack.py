"""A small recording Slack Web API on loopback that answers like Slack: `ok`, `ts`,
429 with Retry-After or 5xx when told to, any error Slack documents (once, for the next calls
of a method, or for good for one channel), a revoked token, and response_url endpoints (which
can answer 404 `expired_url` or 5xx)."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .server import LiveServer

SCOPES = "commands,chat:write,chat:write.public,app_mentions:read,users:read,channels:history,groups:history,files:write,reactions:read,channels:manage"  # as manifest.json asks


CHANNEL_METHODS = ("conversations.create", "conversations.invite", "conversations.setTopic", "conversations.archive")
CHANNEL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    key: str = ""
    at: float = field(default_factory=time.time)
    ts: str | None = None  # chat.postMessage: the ts Slack answered (what a chat.update names)


class FakeSlack:
    def __init__(self):
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.responses: list[Call] = []  # POSTs to response_url
        self._failures: dict[str, list[tuple[int, dict, dict]]] = {}
        self._ts = itertools.count(1)
        self.messages: dict[tuple[str, str], dict] = {}  # (channel, ts) -> latest params
        self.posted_at: dict[tuple[str, str], float] = {}  # (channel, ts) -> when it was posted (wall clock)
        self.socket_url: str | None = None  # what apps.connections.open hands out (Socket Mode tests)
        # Like Slack: at most one chat.postMessage per channel per this many seconds, else 429 —
        # after a burst of `channel_burst` posts (a token bucket per channel; 1: no burst).
        self.channel_rate: float | None = None
        self.channel_burst: int = 1
        self.delay: float = 0.0  # seconds chat.postMessage takes to answer after Slack has the message
        self.users: dict[str, str] = {}  # user id -> display name, for users.info
        self._last_post: dict[str, tuple[float, float]] = {}  # channel -> (tokens left, when counted)
        self._refused: dict[str, str] = {}  # channel -> the error every post/update/ephemeral there gets
        self._channel_failures: dict[str, int] = {}  # channel -> how many more posts there answer 429
        self._channel_retry_after: dict[str, int] = {}
        self._respond_failures: list[tuple[int, str]] = []
        self.revoked: str | None = None  # every call with the token answers this error (token_revoked)
        # External file upload: files.getUploadURLExternal hands out /upload/{file_id}, its POST body is
        # kept in `uploads`, files.completeUploadExternal shares it: `files` (channel, title, comment, bytes).
        self.uploads: dict[str, bytes] = {}
        self.files: list[dict[str, Any]] = []
        self._file_ids = itertools.count(1)
        # Messages people wrote (📌 tests): channel -> messages with their reactions (see the pins block).
        self.channel_messages: dict[str, list[dict[str, Any]]] = {}
        # App Home (issue 19 item 2): views.publish keeps each user's latest home view.
        self.homes: dict[str, dict] = {}
        self._init_channels()
        # --- modals (views.open / views.update): every view shown, by its id, as last opened or updated
        self.views: dict[str, dict[str, Any]] = {}
        self._view_ids = itertools.count(1)
        app = Starlette(routes=[
            Route("/api/{method}", self._api, methods=["POST", "GET"]),
            Route("/upload/{file_id}", self._upload, methods=["POST"]),
            Route("/respond/{key}", self._respond, methods=["POST"]),
        ])
        self.live = LiveServer(app)
        self.url = self.live.url
        self.api_url = f"{self.url}/api/"

    def start(self) -> "FakeSlack":
        self.live.start()
        return self

    def stop(self) -> None:
        self.live.stop()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.responses.clear()
            self._failures.clear()
            self.messages.clear()
            self.posted_at.clear()
            self.socket_url = None
            self.channel_rate = None
            self.channel_burst = 1
            self.delay = 0.0
            self._last_post.clear()
            self.users.clear()
            self._refused.clear()
            self._channel_failures.clear()
            self._channel_retry_after.clear()
            self._respond_failures.clear()
            self.revoked = None
            self.uploads.clear()
            self.files.clear()
            self.channel_messages.clear()
            self.homes.clear()  # App Home
            self._init_channels()
            self.views.clear()

    def response_url(self, key: str = "r") -> str:
        return f"{self.url}/respond/{key}"

    # --- failure injection -------------------------------------------------
    def fail(self, method: str, *, status: int = 429, retry_after: int = 1, times: int = 1,
             error: str | None = None) -> None:
        """Make the next `times` calls of `method` fail (HTTP status, or ok=false with `error`)."""
        headers = {"Retry-After": str(retry_after)} if status == 429 else {}
        body = {"ok": False, "error": error or ("ratelimited" if status == 429 else "internal_error")}
        with self._lock:
            self._failures.setdefault(method, []).extend([(status, headers, body)] * times)

    def fail_channel(self, channel: str, *, retry_after: int = 1, times: int = 1) -> None:
        """The next `times` chat.postMessage calls to `channel` answer 429 with Retry-After."""
        with self._lock:
            self._channel_failures[channel] = self._channel_failures.get(channel, 0) + times
            self._channel_retry_after[channel] = retry_after

    def refuse(self, channel: str, error: str = "not_in_channel") -> None:
        """Every chat.postMessage / chat.update / chat.postEphemeral to `channel` answers `error`
        (ok=false, HTTP 200), as Slack does for a channel the bot is not in, or archived."""
        with self._lock:
            self._refused[channel] = error

    def fail_responses(self, status: int = 404, *, error: str = "expired_url", times: int = 1) -> None:
        """The next `times` POSTs to a response_url answer `status` (404 `expired_url`, 500...)."""
        with self._lock:
            self._respond_failures.extend([(status, error)] * times)

    def revoke(self, error: str | None = "token_revoked") -> None:
        """Every Web API call with the token answers `error` (None: the token works again)."""
        with self._lock:
            self.revoked = error

    # --- inspection ----------------------------------------------------------
    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def attempts(self, method: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.method == method)

    def _of(self, method: str, where: Callable[[Call], bool] | None) -> list[Call]:
        calls = self.calls_of(method) if method != "respond" else self.responses_list()
        return [c for c in calls if where(c)] if where else calls

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0,
                 where: Callable[[Call], bool] | None = None) -> list[Call]:
        """At least `count` calls of `method` ("respond": response_url posts), those `where` keeps;
        fails after `timeout` seconds. Blocks: for tests that are not coroutines."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(calls := self._of(method, where)) >= count:
                return calls
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {method} call(s), got {len(self._of(method, where))}")

    async def wait(self, method: str, count: int = 1, timeout: float = 10.0,
                   where: Callable[[Call], bool] | None = None) -> list[Call]:
        """`wait_for` for coroutines: awaits the calls without blocking the test's loop."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(calls := self._of(method, where)) >= count:
                return calls
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} {method} call(s), got {len(self._of(method, where))}")

    def home_of(self, user: str) -> dict | None:
        """The home view last published for `user` (views.publish), or None."""
        with self._lock:
            return self.homes.get(user)

    def publishes(self, user: str) -> list[Call]:
        """Every views.publish for `user`, oldest first."""
        return [c for c in self.calls_of("views.publish") if c.params.get("user_id") == user]

    def responses_list(self) -> list[Call]:
        with self._lock:
            return list(self.responses)

    def posted(self, channel: str | None = None) -> list[dict]:
        """Messages Slack accepted (not the failed attempts), oldest first."""
        with self._lock:
            return [p for (c, _), p in self.messages.items() if channel is None or c == channel]

    def everything_sent(self) -> str:
        """All text that reached 'Slack', for leak checks."""
        with self._lock:
            return json.dumps([c.params for c in self.calls] + [c.params for c in self.responses], default=str)

    # --- handlers --------------------------------------------------------------
    async def _params(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        if not raw:
            return dict(request.query_params)
        if "json" in ctype:
            return json.loads(raw)
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        params = await self._params(request)
        call = Call(method, params, dict(request.headers))
        with self._lock:
            self.calls.append(call)
            failures = self._failures.get(method)
            failure = failures.pop(0) if failures else None
        if failure:
            status, headers, body = failure
            return JSONResponse(body, status_code=status if status != 200 else 200, headers=headers)
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") and method != "api.test":
            return JSONResponse({"ok": False, "error": "not_authed"})
        with self._lock:
            revoked = self.revoked
            refused = self._refused.get(params.get("channel", "")) if method in (
                "chat.postMessage", "chat.update", "chat.postEphemeral") else None
        if revoked and method != "api.test":
            return JSONResponse({"ok": False, "error": revoked})
        if refused:
            return JSONResponse({"ok": False, "error": refused})
        pins_answer = self._pins_api(method, params)
        if pins_answer is not None:
            return pins_answer
        if method == "auth.test":
            return JSONResponse({"ok": True, "url": "https://revops-test.slack.com/", "team": "Test",
                                 "user": "revops", "team_id": "T0TEST", "user_id": "U0BOT", "bot_id": "B0BOT"},
                                headers={"x-oauth-scopes": SCOPES})
        if method == "apps.connections.open":
            if not self.socket_url:
                return JSONResponse({"ok": False, "error": "not_allowed_token_type"})
            return JSONResponse({"ok": True, "url": self.socket_url})
        if method == "chat.postMessage":
            channel = params.get("channel")
            with self._lock:
                throttled = self._channel_failures.get(channel, 0) > 0
                if throttled:
                    self._channel_failures[channel] -= 1
                    retry_after = self._channel_retry_after.get(channel, 1)
            if throttled:
                return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429,
                                    headers={"Retry-After": str(retry_after)})
            if self.channel_rate:
                now = time.monotonic()
                with self._lock:
                    tokens, last = self._last_post.get(channel, (float(self.channel_burst), now))
                    tokens = min(float(self.channel_burst), tokens + (now - last) / self.channel_rate)
                    limited = tokens < 1 - 1e-9
                    self._last_post[channel] = (tokens if limited else tokens - 1, now)
                if limited:
                    return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429,
                                        headers={"Retry-After": "1"})
            ts = f"{1700000000 + next(self._ts)}.000100"

            with self._lock:
                self.messages[(channel, ts)] = params
                self.posted_at[(channel, ts)] = time.time()
                call.ts = ts
                delay = self.delay
            if delay:
                await asyncio.sleep(delay)
            return JSONResponse({"ok": True, "channel": channel, "ts": ts,
                                 "message": {"text": params.get("text"), "ts": ts}})
        if method == "chat.update":
            key = (params.get("channel"), params.get("ts"))
            with self._lock:
                if key not in self.messages:
                    return JSONResponse({"ok": False, "error": "message_not_found"})
                self.messages[key] = params
            return JSONResponse({"ok": True, "channel": key[0], "ts": key[1]})
        if method == "chat.postEphemeral":
            return JSONResponse({"ok": True, "message_ts": f"{1700000000 + next(self._ts)}.000200"})
        if method == "conversations.history":  # newest first, with each message's metadata
            channel, oldest = params.get("channel"), float(params.get("oldest") or 0)
            with self._lock:
                found = [(self.posted_at[key], key[1], p) for key, p in self.messages.items()
                         if key[0] == channel and self.posted_at.get(key, 0) >= oldest]
            messages = []
            for _, ts, p in sorted(found, key=lambda item: item[0], reverse=True):
                message = {"type": "message", "ts": ts, "text": p.get("text"), "bot_id": "B0BOT"}
                metadata = p.get("metadata")
                if isinstance(metadata, str):
                    metadata = json.loads(metadata)
                if metadata:
                    message["metadata"] = metadata
                messages.append(message)
            return JSONResponse({"ok": True, "messages": messages, "has_more": False})
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._file_ids):08d}"
            return JSONResponse({"ok": True, "file_id": file_id, "upload_url": f"{self.url}/upload/{file_id}"})
        if method == "files.completeUploadExternal":
            listed = params.get("files") or "[]"
            listed = json.loads(listed) if isinstance(listed, str) else listed
            shared = []
            with self._lock:
                for item in listed:
                    if item.get("id") not in self.uploads:
                        return JSONResponse({"ok": False, "error": "invalid_arguments"})
                    shared.append({"id": item["id"], "title": item.get("title"), "channel": params.get("channel_id"),
                                   "initial_comment": params.get("initial_comment"),
                                   "thread_ts": params.get("thread_ts"), "content": self.uploads[item["id"]]})
                self.files.extend(shared)
            return JSONResponse({"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in shared]})
        # --- App Home (issue 19 item 2): views.publish ------------------------------------------
        if method == "views.publish":
            view = params.get("view")
            view = json.loads(view) if isinstance(view, str) else view
            user = params.get("user_id")
            if not user or not isinstance(view, dict) or view.get("type") != "home":
                return JSONResponse({"ok": False, "error": "invalid_arguments"})
            if len(view.get("blocks") or []) > 100:
                return JSONResponse({"ok": False, "error": "invalid_blocks"})
            with self._lock:
                self.homes[user] = view
            return JSONResponse({"ok": True, "view": {"id": f"V{user}", "type": "home", **view}})
        if method in ("views.open", "views.update"):
            return self._views(method, params)
        if method == "users.info":
            user = params.get("user", "")
            if user not in self.users:
                return JSONResponse({"ok": False, "error": "user_not_found"})
            return JSONResponse({"ok": True, "user": {"id": user, "name": user.lower(), "real_name": self.users[user],
                                                      "profile": {"display_name": self.users[user],
                                                                  "real_name": self.users[user]}}})
        if method in CHANNEL_METHODS:
            return self._channels_api(method, params)
        return JSONResponse({"ok": True})

    # --- messages people wrote, their threads and reactions (📌 to the timeline, issue 19 item 3) ---
    # conversations.history (of a channel a test put messages in), conversations.replies,
    # chat.getPermalink and reactions.get answer from `channel_messages`, as Slack does: a reply in a
    # thread is not in the channel's history, only in its thread.
    def put_message(self, channel: str, text: str, *, user: str, ts: str, thread_ts: str | None = None,
                    reactions: dict[str, list[str]] | None = None) -> str:
        """A message someone wrote in `channel` at `ts` (a reply when `thread_ts` names its parent),
        with `reactions` (emoji name -> who reacted); returns its ts."""
        message = {"type": "message", "ts": ts, "user": user, "text": text,
                   "reactions": {name: list(users) for name, users in (reactions or {}).items()}}
        if thread_ts:
            message["thread_ts"] = thread_ts
        with self._lock:
            self.channel_messages.setdefault(channel, []).append(message)
        return ts

    def react(self, channel: str, ts: str, name: str, user: str, *, remove: bool = False) -> None:
        """`user` adds (or, `remove`, takes back) a reaction on the message."""
        with self._lock:
            message = next(m for m in self.channel_messages[channel] if m["ts"] == ts)
            users = message["reactions"].setdefault(name, [])
            if remove:
                users.remove(user)
            elif user not in users:
                users.append(user)
            if not users:
                del message["reactions"][name]

    @staticmethod
    def _shown(message: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in message.items() if k != "reactions"}
        if message["reactions"]:
            shown["reactions"] = [{"name": name, "users": list(users), "count": len(users)}
                                  for name, users in message["reactions"].items()]
        return shown

    def _pins_api(self, method: str, params: dict[str, Any]) -> Response | None:
        if method not in ("conversations.history", "conversations.replies", "chat.getPermalink", "reactions.get"):
            return None
        channel = params.get("channel", "")
        with self._lock:
            messages = [dict(m, reactions={k: list(v) for k, v in m["reactions"].items()}) for m in self.channel_messages.get(channel, [])]
        if method == "conversations.history" and not messages:
            return None  # the bot's own posts (the outbox's history check), above
        if not messages:
            return JSONResponse({"ok": False, "error": "channel_not_found"})

        def in_range(ts: str) -> bool:
            inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")
            latest, oldest = params.get("latest"), params.get("oldest")
            if latest is not None and (float(ts) > float(latest) or (not inclusive and ts == latest)):
                return False
            if oldest is not None and (float(ts) < float(oldest) or (not inclusive and ts == oldest)):
                return False
            return True

        limit = int(params.get("limit") or 100)
        if method == "conversations.history":  # top-level messages only, newest first
            top = [m for m in messages if m.get("thread_ts") in (None, m["ts"]) and in_range(m["ts"])]
            top.sort(key=lambda m: float(m["ts"]), reverse=True)
            return JSONResponse({"ok": True, "messages": [self._shown(m) for m in top[:limit]],
                                 "has_more": len(top) > limit})
        ts = params.get("ts") or params.get("timestamp") or params.get("message_ts") or ""
        message = next((m for m in messages if m["ts"] == ts), None)
        if message is None:
            return JSONResponse({"ok": False, "error": "message_not_found" if method != "conversations.replies"
                                 else "thread_not_found"})
        if method == "chat.getPermalink":
            link = f"https://revops-test.slack.com/archives/{channel}/p{ts.replace('.', '')}"
            if message.get("thread_ts") not in (None, ts):
                link += f"?thread_ts={message['thread_ts']}&cid={channel}"
            return JSONResponse({"ok": True, "channel": channel, "permalink": link})
        if method == "reactions.get":
            return JSONResponse({"ok": True, "type": "message", "channel": channel, "message": self._shown(message)})
        # conversations.replies: the thread's parent first, then its replies in range, oldest first
        parent_ts = message.get("thread_ts") or ts
        parent = next((m for m in messages if m["ts"] == parent_ts), message)
        replies = sorted((m for m in messages if m.get("thread_ts") == parent_ts and m["ts"] != parent_ts
                          and in_range(m["ts"])), key=lambda m: float(m["ts"]))
        thread = [parent, *replies][:limit]
        return JSONResponse({"ok": True, "messages": [self._shown(m) for m in thread], "has_more": False})
    # --- channels: conversations.create / invite / setTopic / archive (an incident's own channel) ---------
    def _init_channels(self) -> None:
        """`channels`: id -> {"name", "members" (set), "topic", "archived", "created_by"}; names stay taken
        when archived, as in Slack. Failures: `fail("conversations.create", status=200, error="missing_scope")`."""
        self.channels: dict[str, dict[str, Any]] = {}
        self._channel_ids = itertools.count(1)

    def channel_named(self, name: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            return next(((cid, dict(c)) for cid, c in self.channels.items() if c["name"] == name), None)

    def _channels_api(self, method: str, params: dict[str, Any]) -> Response:
        with self._lock:
            if method == "conversations.create":
                name = str(params.get("name") or "")
                if not name or len(name) > 80:
                    return JSONResponse({"ok": False, "error": "invalid_name_maxlength" if name else "invalid_name_required"})
                if not all(ch in CHANNEL_NAME_CHARS for ch in name):
                    return JSONResponse({"ok": False, "error": "invalid_name_specials"})
                if any(c["name"] == name for c in self.channels.values()):
                    return JSONResponse({"ok": False, "error": "name_taken"})
                cid = f"C9NEW{next(self._channel_ids):04d}"
                self.channels[cid] = {"name": name, "members": {"U0BOT"}, "topic": "", "archived": False}
                return JSONResponse({"ok": True, "channel": {"id": cid, "name": name, "is_channel": True,
                                                             "is_private": params.get("is_private") in (True, "true")}})
            channel = self.channels.get(str(params.get("channel") or ""))
            if channel is None:
                return JSONResponse({"ok": False, "error": "channel_not_found"})
            if method == "conversations.archive":
                if channel["archived"]:
                    return JSONResponse({"ok": False, "error": "already_archived"})
                channel["archived"] = True
                return JSONResponse({"ok": True})
            if channel["archived"]:
                return JSONResponse({"ok": False, "error": "is_archived"})
            if method == "conversations.invite":
                users = [u for u in str(params.get("users") or "").split(",") if u]
                if not users:
                    return JSONResponse({"ok": False, "error": "no_user"})
                if "U0BOT" in users:
                    return JSONResponse({"ok": False, "error": "cant_invite_self"})
                if all(u in channel["members"] for u in users):
                    return JSONResponse({"ok": False, "error": "already_in_channel"})
                channel["members"].update(users)
                return JSONResponse({"ok": True, "channel": {"id": params.get("channel")}})
            # conversations.setTopic
            topic = str(params.get("topic") or "")
            if len(topic) > 250:
                return JSONResponse({"ok": False, "error": "too_long"})
            channel["topic"] = topic
            return JSONResponse({"ok": True, "channel": {"id": params.get("channel"), "topic": {"value": topic}}})

    # --- modals ------------------------------------------------------------------
    def _views(self, method: str, params: dict[str, Any]) -> Response:
        """views.open (needs a trigger_id) hands out a view id and hash; views.update names the
        view by its id (and, when given, the hash it last had: `hash_conflict` otherwise)."""
        view = params.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not isinstance(view, dict) or view.get("type") != "modal":
            return JSONResponse({"ok": False, "error": "invalid_arguments"})
        with self._lock:
            if method == "views.open":
                if not params.get("trigger_id"):
                    return JSONResponse({"ok": False, "error": "invalid_trigger_id"})
                view_id = f"V{next(self._view_ids):08d}"
            else:
                view_id = params.get("view_id")
                if view_id not in self.views:
                    return JSONResponse({"ok": False, "error": "not_found"})
                if params.get("hash") and params["hash"] != self.views[view_id]["hash"]:
                    return JSONResponse({"ok": False, "error": "hash_conflict"})
            stored = {**view, "id": view_id, "hash": f"{time.time():.6f}.{view_id}",
                      "state": {"values": {}}}
            self.views[view_id] = stored
        return JSONResponse({"ok": True, "view": stored})

    async def _upload(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.uploads[request.path_params["file_id"]] = body
        return Response(f"OK - {len(body)}")

    async def _respond(self, request: Request) -> Response:
        params = await self._params(request)
        with self._lock:
            failure = self._respond_failures.pop(0) if self._respond_failures else None
            if failure is None:
                self.responses.append(Call("respond", params, dict(request.headers), request.path_params["key"]))
            else:
                self.calls.append(Call("respond.failed", params, dict(request.headers), request.path_params["key"]))
        if failure is not None:
            status, error = failure
            return Response(error, status_code=status)
        return Response("ok")
