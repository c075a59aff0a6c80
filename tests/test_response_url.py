"""response_url failures fall back to chat.postEphemeral to that person in that channel, logged
with the status and never the URL (SPEC §10, issue 15 item 4): 404 `expired_url`, a 5xx after
the retries, the network."""

from __future__ import annotations

import pytest

from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from tests.support.harness import CHANNEL, VIEWER, flatten
from tests.support.net import free_port


def _slow_command(bot) -> None:
    slow = CommandSet("slowtest")

    @slow.command("slowtest", summary="answers after the acknowledgement", role=Role.viewer, slow=True)
    async def later(ctx, args):
        return Reply("the answer that must not be lost")

    bot.runtime.services.registry.add(slow)


def _warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if "response_url failed" in line]


@pytest.mark.parametrize("how", ["expired_url", "server_error", "network"])
async def test_a_failed_response_url_falls_back_to_an_ephemeral(bot, fake_slack, captured_logs, how):
    _slow_command(bot)
    url = bot.response_url()
    if how == "expired_url":
        fake_slack.fail_responses(404, error="expired_url", times=1)
    elif how == "server_error":
        fake_slack.fail_responses(500, error="internal_error", times=3)  # the first try and both retries
    else:
        url = f"http://127.0.0.1:{free_port()}/respond/closed-token-xyz"  # nothing listens there
    response = bot.slash("slowtest", user=VIEWER, response_url=url)
    assert response.status_code == 200 and "Working on it" in flatten(response.json())
    ephemeral = (await fake_slack.wait("chat.postEphemeral"))[0].params
    assert (ephemeral["user"], ephemeral["channel"]) == (VIEWER, CHANNEL)
    assert "the answer that must not be lost" in flatten(ephemeral)
    await bot.drain()
    assert fake_slack.responses_list() == []  # nothing reached the response_url
    warnings = _warnings(captured_logs)
    assert len(warnings) == 1 and "\"warning\"" in warnings[0]
    expected = {"expired_url": "HTTP 404 expired_url", "server_error": "HTTP 500", "network": "network"}[how]
    assert expected in warnings[0], warnings
    assert "/respond/" not in "\n".join(captured_logs) and "closed-token-xyz" not in "\n".join(captured_logs)
    if how == "server_error":
        assert fake_slack.attempts("respond.failed") == 3


async def test_a_click_whose_response_url_expired_is_answered_by_ephemeral(bot, fake_slack, captured_logs):
    fake_slack.fail_responses(404, error="expired_url", times=1)
    response, url = bot.click("revops:flags.panic_cancel", "", user="U0ADMIN")
    assert response.status_code == 200
    ephemeral = (await fake_slack.wait("chat.postEphemeral"))[0].params
    assert ephemeral["user"] == "U0ADMIN" and ephemeral["channel"] == CHANNEL
    assert _warnings(captured_logs)


async def test_a_working_response_url_gets_the_answer_and_no_ephemeral(bot, fake_slack, captured_logs):
    _slow_command(bot)
    url = bot.response_url()
    bot.slash("slowtest", user=VIEWER, response_url=url)
    assert "the answer that must not be lost" in flatten(bot.wait_response(url))
    await bot.drain()
    assert fake_slack.calls_of("chat.postEphemeral") == [] and not _warnings(captured_logs)
