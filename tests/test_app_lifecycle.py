"""The app's lifecycle (issue 15 item 6): `app_uninstalled` and `tokens_revoked` pause sending —
posts stay pending, untried, instead of failing for a day against a dead token —; `health` and
`preflight` show it; it clears when auth.test works again (the outbox checks while posts wait;
preflight's auth.test clears it too)."""

from __future__ import annotations

import asyncio
import sys

import pytest
from sqlalchemy import select

from bot import cli
from bot.deliveries import read_state
from bot.models import OutgoingMessage
from tests.support.harness import ADMIN, CHANNEL, RESPONDER, flatten


async def _state(bot):
    async with bot.db() as db, db.transaction() as s:
        return await read_state(s)


async def _statuses(bot):
    async with bot.db() as db, db.transaction() as s:
        return (await s.execute(select(OutgoingMessage.status).order_by(OutgoingMessage.id))).scalars().all()


def ask(bot, text: str, *, user: str) -> dict:
    """A slow command's answer (it follows the acknowledgement through the response_url)."""
    url = bot.response_url()
    response = bot.slash(text, user=user, response_url=url)
    assert response.status_code == 200
    return bot.wait_response(url) if "Working on it" in flatten(response.json()) else response.json()


LIFECYCLE = {
    "app_uninstalled": {"type": "app_uninstalled"},
    "tokens_revoked": {"type": "tokens_revoked", "tokens": {"bot": ["U0BOT"]}},
}


@pytest.mark.parametrize("event", sorted(LIFECYCLE))
async def test_a_lifecycle_event_pauses_sending_until_the_token_works(bot, fake_slack, event):
    bot.slash_text("help")  # (bolt checks the token once, at its first request, and keeps the answer)
    assert bot.event(LIFECYCLE[event]).status_code == 200
    await bot.drain()
    state = await _state(bot)
    assert state.paused is not None and ("uninstalled" in state.paused or "revoked" in state.paused)
    fake_slack.revoke("token_revoked")
    bot.runtime.deliverer.recheck_token_every = 3600  # no check of the token while we look
    assert "Dry-run is now on" in bot.slash_text("dryrun on", user=ADMIN)
    await bot.drain()
    assert await _statuses(bot) == ["pending"]  # kept, untried
    assert fake_slack.attempts("chat.postMessage") == 0
    health = flatten(ask(bot, "health", user=ADMIN))
    assert "slack posts — paused: " in health and "1 post(s) waiting" in health
    # The token works again (reinstalled): the outbox's next check sees it and the post goes.
    fake_slack.revoke(None)
    bot.runtime.deliverer.recheck_token_every = 0
    await fake_slack.wait("chat.postMessage", where=lambda c: c.params.get("channel") == CHANNEL)
    await bot.drain()
    assert await _statuses(bot) == ["sent"]
    assert (await _state(bot)).paused is None


async def test_a_dead_token_met_while_posting_pauses_and_nothing_is_retried_for_a_day(bot, fake_slack):
    bot.slash_text("help")  # (bolt checks the token once, at its first request, and keeps the answer)
    fake_slack.revoke("token_revoked")
    bot.runtime.deliverer.recheck_token_every = 3600
    bot.slash_text("dryrun on", user=ADMIN)
    bot.slash_text("dryrun off", user=ADMIN)
    await fake_slack.wait("chat.postMessage")
    await bot.drain()
    assert await _statuses(bot) == ["pending", "pending"]
    assert fake_slack.attempts("chat.postMessage") == 1  # one try met the dead token; then nothing
    assert "token_revoked" in (await _state(bot)).paused
    preflight = flatten(ask(bot, "preflight", user=RESPONDER))
    assert "slack posts — paused: Slack said token_revoked" in preflight
    # Preflight's auth.test passing clears it: the posts go, in order.
    fake_slack.revoke(None)
    preflight = flatten(ask(bot, "preflight", user=RESPONDER))
    assert "slack posts — sending" in preflight
    bot.runtime.deliverer.kick()
    posts = await fake_slack.wait("chat.postMessage", 3)
    assert ["turned on" in flatten(p.params) for p in posts[1:]] == [True, False]


async def test_user_tokens_revoked_alone_change_nothing(bot):
    assert bot.event({"type": "tokens_revoked", "tokens": {"oauth": ["U0SOMEONE"]}}).status_code == 200
    await bot.drain()
    assert (await _state(bot)).paused is None


def test_the_long_running_processes_run_on_uvloop_where_it_is_installed():
    """`revops worker` runs its loop with `run_loop` (uvicorn picks uvloop for `serve` itself):
    uvloop is a dependency on Linux and macOS, and bench/scale_out.py shows what it is worth."""
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    if sys.platform == "win32":
        assert cli.uvloop is None or cli.run_loop(which()).startswith("uvloop")
    else:
        assert cli.uvloop is not None, "uvloop is a dependency here (pyproject.toml)"
        assert cli.run_loop(which()).startswith("uvloop")
