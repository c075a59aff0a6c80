"""Settings: environment plus revops.toml; one clear line for anything invalid."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from bot.durations import format_duration, parse_duration
from bot.errors import SettingsError
from bot.settings import load_settings
from tests.support.harness import BOT_TOKEN, SIGNING_SECRET


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("1d", 86400),
                                          ("1h30m", 5400), ("250ms", 0.25), (" 2 h ", 7200), (45, 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "soon", "15", "m15", "1x", "-5m", True, None])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration():
    assert format_duration(timedelta(minutes=90)) == "1h 30m"
    assert format_duration(timedelta(seconds=42)) == "42s"
    assert format_duration(timedelta(days=2, hours=3)) == "2d 3h"


def write(tmp_path, text):
    path = tmp_path / "revops.toml"
    path.write_text(text)
    return str(path)


def test_the_example_file_loads(tmp_path):
    from bot.settings import example_config_path

    settings = load_settings(revops_config=str(example_config_path()))
    cfg = settings.cfg
    assert cfg.roles.admin == ["U0ADMIN"]
    assert cfg.credits.approval_ttl == timedelta(minutes=30)
    assert cfg.severity["P1"].revenue_update == timedelta(minutes=30)
    assert cfg.escalation["L2"].after == timedelta(minutes=15)
    assert cfg.services[0].p95_slo == timedelta(milliseconds=150)


def test_missing_severities_get_the_runbook_defaults(tmp_path):
    settings = load_settings(revops_config=write(tmp_path, '[severity.P1]\nack = "5m"\nresolve = "30m"\n'))
    assert settings.cfg.severity["P1"].ack == timedelta(minutes=5)
    assert settings.cfg.severity["P2"].resolve == timedelta(hours=4)
    assert settings.cfg.severity["P3"].ack == timedelta(hours=4)


@pytest.mark.parametrize("toml,message", [
    ('[credits]\nmax_grnt = 5\n', "revops.toml: credits.max_grnt: unknown key"),
    ('[credits]\napproval_ttl = "soon"\n', "revops.toml: credits.approval_ttl: expected a duration"),
    ('[credits]\nmax_grant = 0\n', "revops.toml: credits.max_grant: Input should be greater than or equal to 1"),
    ('[roles]\nadmin = "U1"\n', "revops.toml: roles.admin: Input should be a valid list"),
    ('[severity.P9]\nack = "1m"\nresolve = "2m"\n', "revops.toml: severity.P9"),
    ("[slack\n", "revops.toml: not valid TOML"),
])
def test_an_invalid_file_names_the_key(tmp_path, toml, message):
    with pytest.raises(SettingsError) as err:
        load_settings(revops_config=write(tmp_path, toml))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("env,message", [
    ({"REVOPS_ENV": "prod"}, "REVOPS_ENV: Input should be 'development', 'staging' or 'production'"),
    ({"DATABASE_URL": "mysql://root:hunter2@db/revops"}, "DATABASE_URL: must be a sqlite:/// or postgresql:// URL"),
    ({"PORT": "eighty"}, "PORT: Input should be a valid integer, unable to parse string as an integer"),
    ({"REVOPS_CONFIG": "/nonexistent/revops.toml"}, "REVOPS_CONFIG: /nonexistent/revops.toml does not exist"),
    ({"REVOPS_DB_POOL_SIZE": "0"}, "REVOPS_DB_POOL_SIZE: Input should be greater than or equal to 1"),
])
def test_the_cli_stops_with_one_clear_line(tmp_path, env, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STRIPE_", "REVOPS_", "DATABASE"))}
    out = subprocess.run([sys.executable, "-m", "bot", "db", "upgrade"], capture_output=True, text=True,
                         env={**clean, **env}, cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == f"revops: configuration error: {message}"
    assert "hunter2" not in out.stderr


def test_secrets_are_never_shown_by_the_settings_objects(tmp_path):
    settings = load_settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                             revops_config=write(tmp_path, ""))
    assert BOT_TOKEN not in repr(settings) and BOT_TOKEN not in str(settings.env.model_dump())
    assert SIGNING_SECRET not in repr(settings.env)


def test_database_urls_are_normalised():
    assert load_settings(database_url="postgres://u@h/db").env.database_url == "postgresql+asyncpg://u@h/db"
    assert load_settings(database_url="sqlite:///x.db").env.database_url == "sqlite+aiosqlite:///x.db"


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("REVOPS_ENV", "REVOPS_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / ".env").write_text("REVOPS_ENV=staging\n")
    assert load_settings().env.revops_env == "staging"
