import time

from tests.support.harness import ADMIN, CHANNEL, VIEWER, flatten


def test_help_answers_in_the_acknowledgement(bot):
    text = bot.slash_text("help", user=VIEWER)
    assert "/revops dryrun" in text
    assert "You are viewer" in text


def test_unsigned_request_gets_401_and_runs_nothing(bot, fake_slack):
    from tests.support.slack_requests import slash_body

    body = slash_body("dryrun on", user=ADMIN, channel=CHANNEL, response_url=bot.response_url())
    r = bot.http.post("/slack/events", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 401
    assert "dry-run is off" in bot.slash_text("dryrun status").lower()
