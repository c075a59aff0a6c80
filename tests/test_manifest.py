"""The manifests declare exactly what the code uses (SPEC §10, issue 15 item 7): the bot scopes
of the Web API methods the code calls, the events bolt listens for, the slash commands it
registers; `should_escape` true; the Socket Mode manifest has no request URLs. Derived from the
code, so a new Web API call or event without its manifest line fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.fake_slack import SCOPES as FAKE_SCOPES
from tests.support.harness import ADMIN, RESPONDER, flatten

ROOT = Path(__file__).resolve().parents[1]
CODE = [p for folder in ("bot", "commands") for p in (ROOT / folder).rglob("*.py")]
MANIFESTS = {"http": ROOT / "manifest.json", "socket": ROOT / "manifest.socket-mode.json"}

# The bot scopes each Web API method needs (api.slack.com/methods). A method the code calls and
# this table does not know fails the test: look it up and add it.
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    # chat:write.public: announcements, incident posts and approval messages go to the channel
    # where someone ran /revops, which the bot need not have been invited to (public channels).
    "chat.postMessage": ("chat:write", "chat:write.public"),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.delete": ("chat:write",),
    "users.info": ("users:read",),
    "users.list": ("users:read",),
    "conversations.open": ("im:write",),
    "conversations.info": ("channels:read",),
    # the outbox looks for a post it may have sent before a crash (its metadata names its outbox id)
    "conversations.history": ("channels:history", "groups:history"),
    # 📌 to the timeline: the pinned message's text (a reply in a thread is only in its thread)
    "conversations.replies": ("channels:history", "groups:history"),
    "chat.getPermalink": (),  # no scope
    "reactions.get": ("reactions:read",),
    "conversations.members": ("channels:read",),
    # an incident's own channel (bot/slack/conversations.py): public channels, so channels:manage
    "conversations.create": ("channels:manage",),
    "conversations.invite": ("channels:manage",),
    "conversations.setTopic": ("channels:manage",),
    "conversations.archive": ("channels:manage",),
    "reactions.add": ("reactions:write",),
    # exports: slack_sdk's files_upload_v2 = files.getUploadURLExternal + files.completeUploadExternal
    "files.upload.v2": ("files:write",),
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
    "views.open": (),
    "views.update": (),  # no scope (the modal the app opened)
    "views.publish": (),
    "auth.test": (),  # no scope
    "apps.connections.open": (),  # the app-level token's connections:write, not a bot scope
}
# Declared ahead of the code that lands in parallel: display names through users.info (issue 15
# item 8). While the code does not call it yet, the manifest may declare it (never the reverse);
# empty this once users.info is in the code.
AHEAD_OF_CODE: set[str] = set()  # scopes declared before the code calls them (none now)

EVENT_SCOPES: dict[str, tuple[str, ...]] = {
    "app_mention": ("app_mentions:read",),
    "app_uninstalled": (),
    "tokens_revoked": (),
    "message": ("channels:history",),
    "app_home_opened": (),
    "reaction_added": ("reactions:read",),
    "reaction_removed": ("reactions:read",),
}

# client.chat_postMessage(, .users_info(, api_call("users.info"
_CALL = re.compile(r"\.(chat|users|conversations|reactions|views|auth|apps|pins|files|team|bots)_([A-Za-z0-9_]+)\(")
_API_CALL = re.compile(r"api_call\(\s*[\"']([a-z]+\.[A-Za-z.]+)[\"']")
_EVENT = re.compile(r"@app\.event\(\s*[\"']([a-z_]+)[\"']")
_COMMAND = re.compile(r"@app\.command\(\s*[\"'](/[a-z-]+)[\"']")


def _method(family: str, rest: str) -> str:
    parts = rest.split("_")  # chat_postMessage -> chat.postMessage; apps_connections_open -> apps.connections.open
    return ".".join([family, *parts])


def code_uses() -> tuple[set[str], set[str], set[str]]:
    methods, events, commands = set(), set(), set()
    for path in CODE:
        source = path.read_text(encoding="utf-8")
        methods |= {_method(f, r) for f, r in _CALL.findall(source)}
        methods |= set(_API_CALL.findall(source))
        events |= set(_EVENT.findall(source))
        commands |= set(_COMMAND.findall(source))
    return methods, events, commands


def derived_scopes() -> set[str]:
    methods, events, commands = code_uses()
    unknown = sorted(m for m in methods if m not in METHOD_SCOPES) + sorted(e for e in events if e not in EVENT_SCOPES)
    assert not unknown, f"add the scopes of {unknown} to the tables above"
    scopes = {s for m in methods for s in METHOD_SCOPES[m]} | {s for e in events for s in EVENT_SCOPES[e]}
    return scopes | ({"commands"} if commands else set())


def load(kind: str) -> dict:
    return json.loads(MANIFESTS[kind].read_text(encoding="utf-8"))


def test_the_scan_sees_the_calls_the_code_makes():
    methods, events, commands = code_uses()
    assert {"chat.postMessage", "chat.update", "chat.postEphemeral", "auth.test", "files.upload.v2"} <= methods
    assert {"app_mention", "app_uninstalled", "tokens_revoked"} <= events
    assert commands == {"/revops"}


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_the_manifest_declares_exactly_the_scopes_events_and_commands_the_code_uses(kind):
    manifest = load(kind)
    methods, events, commands = code_uses()
    declared, derived = set(manifest["oauth_config"]["scopes"]["bot"]), derived_scopes()
    assert declared - AHEAD_OF_CODE == derived - AHEAD_OF_CODE
    assert derived <= declared
    assert len(manifest["oauth_config"]["scopes"]["bot"]) == len(set(manifest["oauth_config"]["scopes"]["bot"]))
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == events
    slash = manifest["features"]["slash_commands"]
    assert {c["command"] for c in slash} == commands
    assert all(c["should_escape"] is True for c in slash)  # @user and #channel arrive as IDs
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_the_http_manifest_points_every_request_at_slack_events_and_socket_mode_has_none():
    http, socket = load("http"), load("socket")
    assert http["settings"]["socket_mode_enabled"] is False
    urls = [http["settings"]["event_subscriptions"]["request_url"], http["settings"]["interactivity"]["request_url"]]
    urls += [c["url"] for c in http["features"]["slash_commands"]]
    assert all(u.endswith("/slack/events") for u in urls)
    assert socket["settings"]["socket_mode_enabled"] is True
    assert "url" not in json.dumps(socket).replace("usage_hint", "")  # no request URL anywhere
    # Otherwise the same app.
    strip = json.loads(json.dumps(http))
    strip["settings"]["socket_mode_enabled"] = True
    del strip["settings"]["event_subscriptions"]["request_url"], strip["settings"]["interactivity"]["request_url"]
    for command in strip["features"]["slash_commands"]:
        del command["url"]
    assert strip == socket


def test_the_fake_slack_grants_what_the_manifest_asks():
    assert set(FAKE_SCOPES.split(",")) == set(load("http")["oauth_config"]["scopes"]["bot"])


async def test_audit_with_an_escaped_mention_finds_that_person(bot):
    # With should_escape, "/revops audit @responder" arrives as "<@U0RESPONDER|responder>".
    assert "Dry-run is now on" in bot.slash_text("dryrun on", user=ADMIN)
    bot.slash_text("dryrun off", user=ADMIN)
    bot.slash_text("grant nobody 5 x", user=RESPONDER)  # a refused request is audited too
    mine = bot.slash_text(f"audit <@{ADMIN}|admin>", user=ADMIN)
    assert f"Audit log (@{ADMIN}" in mine and mine.count("dryrun") == 2
    theirs = bot.slash_text(f"audit <@{RESPONDER}|responder>", user=ADMIN)
    assert "dryrun" not in theirs
