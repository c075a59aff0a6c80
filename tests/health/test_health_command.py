"""`/revops health` end to end: signed slash command, immediate acknowledgement,
the report through the response_url; probes stored; production services going
down announced once in the incident channel; no secret anywhere."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from bot.health.models import HealthProbe
from tests.support.harness import CHANNEL, SECRETS, VIEWER, Bot, flatten, make_settings

from .conftest import assert_no_secrets


def start_bot(tmp_path, db_url, fake_slack, monitored, **env) -> Bot:
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=monitored.toml(),
                             stripe_api_base=monitored.url, **env)
    return Bot(settings, fake_slack).start()


def incident_posts(fake_slack) -> list[str]:
    return [c.params.get("text", "") for c in fake_slack.calls_of("chat.postMessage")
            if c.params.get("channel") == CHANNEL]


async def test_health_all_reports_services_drift_and_the_bot(tmp_path, db_url, fake_slack, monitored, raw_logs):
    bot = start_bot(tmp_path, db_url, fake_slack, monitored)
    try:
        url = bot.response_url()
        started = time.perf_counter()
        ack = bot.slash("health", user=VIEWER, response_url=url)
        acked_in = time.perf_counter() - started
        assert ack.status_code == 200
        assert "Working on it" in flatten(ack.json())
        assert acked_in < 0.8, acked_in  # the hanging service (1 s) is not waited for before the acknowledgement

        report = flatten(bot.wait_response(url))
        lines = report.splitlines()

        def line(prefix: str) -> str:
            found = [ln for ln in lines if ln.startswith(prefix) or f" {prefix}" in ln]
            assert found, f"no line for {prefix!r} in:\n{report}"
            return found[0]

        assert "Health: 3 down, 3 ok" in report
        assert "ok: HTTP 200" in line("checkout (production)") and "version 2.0.0" in line("checkout (production)")
        assert "down: timed out after 1s" in line("search (production)")
        assert "over SLO 150 ms (1 probe)" in line("search (production)")
        assert "down: HTTP 500" in line("billing-api (production)")
        assert "down: connection refused" in line("ledger (production)")
        assert "p95" in line("checkout (production)") and "within SLO 1000 ms (1 probe)" in line("checkout (production)")
        assert "provider-register: production 1.4.2 ≠ staging 1.5.0" in line("drift")
        # the bot itself
        assert "reachable" in line("database")
        assert "at head" in line("migrations")
        assert "reachable, test mode" in line("stripe —")
        assert "auth.test ok" in line("slack —")
        assert "no heartbeat yet" in line("scheduler")
        assert "no webhooks yet" in line("stripe webhooks")
        assert "SLACK_BOT_TOKEN set" in report and "SLACK_APP_TOKEN missing" in report

        async with bot.db() as db:
            async with db.transaction() as s:
                stored = (await s.execute(select(func.count()).select_from(HealthProbe))).scalar()
        assert stored == 6

        # the three production services that went down are announced once each...
        await fake_slack.wait("chat.postMessage", 3, where=lambda c: c.params.get("channel") == CHANNEL)
        await bot.drain()
        posts = incident_posts(fake_slack)
        assert sorted(p.split("*")[1] for p in posts) == ["billing-api", "ledger", "search"]
        # ...and not again while they stay down
        url2 = bot.response_url()
        bot.slash("health all", user=VIEWER, response_url=url2)
        assert "(2 probes)" in flatten(bot.wait_response(url2))
        await bot.drain()
        assert len(incident_posts(fake_slack)) == 3
    finally:
        bot.stop()
    assert_no_secrets(fake_slack.everything_sent(), "\n".join(raw_logs))
    assert len(raw_logs) > 10  # the capture saw the run (Slack calls, SQL, HTTP), so a leak would have shown


async def test_health_by_name_and_bad_input(tmp_path, db_url, fake_slack, monitored):
    bot = start_bot(tmp_path, db_url, fake_slack, monitored)
    try:
        url = bot.response_url()
        bot.slash("health provider-register", user=VIEWER, response_url=url)
        answer = bot.wait_response(url)
        report = flatten(answer)
        assert answer["response_type"] == "ephemeral"
        assert "provider-register (production)" in report and "provider-register (staging)" in report
        assert "drift" in report
        assert "checkout" not in report and "The bot" not in report

        url = bot.response_url()
        bot.slash("health nosuch", user=VIEWER, response_url=url)
        report = flatten(bot.wait_response(url))
        assert "no service nosuch" in report
        assert "configured: billing-api, checkout, ledger, provider-register, search" in report
        assert "Usage: /revops health [name]" in report

        # a line that does not parse is answered inside the acknowledgement
        report = bot.slash_text("health checkout extra", user=VIEWER)
        assert "unexpected argument extra" in report and "Usage: /revops health [name]" in report
        assert "Traceback" not in report
    finally:
        bot.stop()
    assert_no_secrets(fake_slack.everything_sent(), secrets=SECRETS)
