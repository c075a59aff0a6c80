"""Text a person typed never becomes a mention, a channel ping or a link in what the bot sends,
whichever way it came in (slash command, app_mention); through signed requests and the fake Slack."""

import re

import pytest

from tests.support.harness import ADMIN, APPROVER, CHANNEL, flatten

HOSTILE = ["<!channel>", "<!here>", "<!everyone>", "<!subteam^S1>", "<@U123>", "<#C1>",
           "<https://evil.example|x>", "&amp;"]


def escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def tokens(text: str) -> list[str]:
    return re.findall(r"<[^>]*>", text)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_slash_command_echoing_user_text_escapes_it(bot, hostile):
    answer = bot.slash_text(f"audit {hostile}", user=APPROVER)
    if hostile.startswith("<@"):  # a mention is how `audit @user` names a person (should_escape)
        assert "Audit log (@U123" in answer
    else:
        assert escaped(hostile) in answer
    assert tokens(answer) == []
    unknown = bot.slash_text(f"{hostile} now", user=APPROVER)
    assert escaped(hostile) in unknown and tokens(unknown) == []


async def test_app_mention_tokens_slack_hands_over_are_not_reposted(bot, fake_slack):
    # Slack itself turns "@channel" typed in a mention into <!channel>: the bot must not post it back live
    text = "<@U0BOT> dryrun sideways <!channel> <https://evil.example/login|Click to re-auth>"
    event = {"type": "app_mention", "user": ADMIN, "text": text, "ts": "1700000002.000100",
             "channel": CHANNEL, "event_ts": "1700000002.000100"}
    assert bot.event(event, event_id="Ev0HOSTILE").status_code == 200
    await bot.drain()
    answers = fake_slack.calls_of("chat.postEphemeral") + fake_slack.calls_of("chat.postMessage")
    assert answers, "the mention got no answer"
    body = "\n".join(flatten(c.params) for c in answers)
    assert "expected one of on, off, status" in body
    assert "&lt;!channel&gt;" in body or "sideways" in body
    assert "<!channel>" not in body and "<https://evil.example" not in body
    assert all(t.startswith("<@") for t in tokens(body)) or tokens(body) == []
