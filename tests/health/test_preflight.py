"""The go-live checklist: `/revops preflight` end to end and `revops preflight` (CLI,
exit code for deploy pipelines), on a good and a bad configuration; secrets only
ever "set" or "missing"."""

from __future__ import annotations

import asyncio

from bot import app
from bot.db import Database, run_upgrade
from bot.flags import set_flag
from tests.support.harness import (ADMIN_KEY, ALERTS_TOKEN, BOT_TOKEN, RESPONDER, ROLES_TOML, SECRETS,
                                   SIGNING_SECRET, STRIPE_KEY, VIEWER, WEBHOOK_SECRET, Bot, flatten, make_settings)
from tests.support.fake_slack import SCOPES as FAKE_SCOPES

from .conftest import assert_no_secrets

LIVE_KEY = "sk_live_revops_preflight_0123456789"
ALL_SECRETS = SECRETS + [LIVE_KEY]

BAD_ROLES = """
[slack]
incident_channel = "C0INCIDENT"

[roles]
approver = ["U0APPROVER"]
responder = ["U0RESPONDER"]
"""


def check_line(report: str, name: str) -> str:
    found = [ln for ln in report.splitlines() if f" {name} — " in f" {ln}"]
    assert found, f"no {name} line in:\n{report}"
    return found[0]


def test_preflight_good_configuration(bot, fake_slack):
    url = bot.response_url()
    bot.slash("preflight", user=VIEWER, response_url=url)
    assert "needs the responder role" in flatten(bot.wait_response(url))

    url = bot.response_url()
    bot.slash("preflight", user=RESPONDER, response_url=url)
    report = flatten(bot.wait_response(url))
    assert "Preflight (development): ready to go live" in report and "0 fail" in report
    for name, words in [("settings", "all 5 required secrets set"), ("webhook secret", "STRIPE_WEBHOOK_SECRET set"),
                        ("stripe key mode", "test key, REVOPS_ENV=development"), ("migrations", "at head"),
                        ("dry-run", "off"), ("panic", "off"), ("roles", "1 admin(s), 3 people can approve"),
                        ("templates", ""), ("slack", f"all {len(FAKE_SCOPES.split(','))} manifest scopes granted"), ("health checks", "")]:
        assert words in check_line(report, name)
    assert "SLACK_BOT_TOKEN\nset" in report and "SLACK_APP_TOKEN\nmissing" in report
    assert_no_secrets(fake_slack.everything_sent())


async def test_preflight_bad_configuration(tmp_path, db_url, fake_slack, raw_logs):
    roles = tmp_path / "bad.toml"
    roles.write_text(BAD_ROLES)
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, revops_config=str(roles),
                             stripe_secret_key=LIVE_KEY, stripe_webhook_secret=None, revops_alerts_token=None)
    bot = Bot(settings, fake_slack).start()
    try:
        bot.slash_text("help", user=VIEWER)  # bolt checks its own token once; the failure below is for preflight
        async with bot.db() as db:
            async with db.transaction() as s:
                await set_flag(s, "dry_run", True, actor="U0ADMIN", at=bot.runtime.services.clock.now())
            async with db.transaction() as s:
                await set_flag(s, "panic", True, actor="U0ADMIN", at=bot.runtime.services.clock.now())
        fake_slack.fail("auth.test", status=200, error="invalid_auth")
        url = bot.response_url()
        bot.slash("preflight", user=RESPONDER, response_url=url)
        report = flatten(bot.wait_response(url))
    finally:
        bot.stop()
    assert "not ready to go live" in report and "5 fail" in report
    fails = {
        "settings": "missing: REVOPS_ALERTS_TOKEN",
        "webhook secret": "STRIPE_WEBHOOK_SECRET missing",
        "stripe key mode": "live keys only in production",
        "roles": "no admin",
        "slack": "auth.test failed (invalid_auth)",
    }
    for name, words in fails.items():
        line = check_line(report, name)
        assert words in line and "fix:" in line, line
    assert "REVOPS_ENV=production" in check_line(report, "stripe key mode")
    assert "dry-run — on" in report and "panic — on" in report
    assert "STRIPE_WEBHOOK_SECRET\nmissing" in report
    assert_no_secrets(report, fake_slack.everything_sent(), "\n".join(raw_logs), secrets=ALL_SECRETS)


def _environment(monkeypatch, tmp_path, db_url, slack_api_url, **overrides):
    config = tmp_path / "cli.toml"
    config.write_text(ROLES_TOML)
    monkeypatch.chdir(tmp_path)  # no stray ./revops.toml or ./.env
    values = {
        "DATABASE_URL": db_url, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_api_url, "STRIPE_SECRET_KEY": STRIPE_KEY, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "REVOPS_ADMIN_API_KEY": ADMIN_KEY, "REVOPS_ALERTS_TOKEN": ALERTS_TOKEN, "REVOPS_CONFIG": str(config),
        "REVOPS_BASE_URL": "http://revops.test", "REVOPS_ENV": "development",
    }
    values.update(overrides)
    for name in ("SLACK_APP_TOKEN", "STRIPE_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def test_cli_preflight_exit_codes(monkeypatch, tmp_path, db_url, fake_slack, capsys):
    # good: migrated, test key in development -> every line pass/warn, exit 0
    run_upgrade(db_url)
    _environment(monkeypatch, tmp_path, db_url, fake_slack.api_url)
    assert app.main(["preflight"]) == 0
    good = capsys.readouterr().out
    assert "FAIL" not in good and "preflight (development): ready" in good
    assert "secrets: SLACK_BOT_TOKEN set" in good and "SLACK_APP_TOKEN missing" in good

    # bad: production with a test key, no webhook secret, SQLite (refused) or an unmigrated database
    fresh = f"sqlite+aiosqlite:///{tmp_path}/fresh.db" if db_url.startswith("sqlite") else db_url
    if not db_url.startswith("sqlite"):
        asyncio.run(_drop_schema(db_url))
    _environment(monkeypatch, tmp_path, fresh, fake_slack.api_url, REVOPS_ENV="production",
                 STRIPE_WEBHOOK_SECRET=None)
    assert app.main(["preflight"]) == 1
    bad = capsys.readouterr().out
    lines = {ln.split()[1]: ln for ln in bad.splitlines() if ln[:4] in ("PASS", "WARN", "FAIL")}
    assert lines["webhook"].startswith("FAIL") and "fix:" in lines["webhook"]
    assert "test key with REVOPS_ENV=production" in lines["stripe"]
    assert lines["migrations"].startswith("FAIL") and "not migrated" in lines["migrations"]
    if db_url.startswith("sqlite"):
        assert "SQLite refused in production" in bad
    else:
        assert lines["database"].startswith("PASS")
    assert "STRIPE_WEBHOOK_SECRET missing" in bad and "NOT READY" in bad
    assert_no_secrets(good, bad)


async def _drop_schema(url: str) -> None:
    from sqlalchemy import text

    db = Database(url)
    try:
        async with db.transaction() as s:
            await s.execute(text("DROP SCHEMA public CASCADE"))
            await s.execute(text("CREATE SCHEMA public"))
    finally:
        await db.dispose()
