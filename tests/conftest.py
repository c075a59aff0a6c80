"""Fixtures: every database test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fake_slack import FakeSlack
from tests.support.harness import Bot, make_settings
from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
def pg_server():
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_slack_server():
    slack = FakeSlack().start()
    yield slack
    slack.stop()


@pytest.fixture
def fake_slack(fake_slack_server):
    fake_slack_server.reset()
    yield fake_slack_server
    fake_slack_server.reset()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/revops.db"
    server = request.getfixturevalue("pg_server")
    return asyncio.run(server.create_database())


@pytest.fixture
def settings(tmp_path, db_url, fake_slack):
    return make_settings(tmp_path, db_url, fake_slack.api_url)


@pytest.fixture
def bot(settings, fake_slack):
    running = Bot(settings, fake_slack).start()
    yield running
    running.stop()


@pytest.fixture
def captured_logs():
    """Every log line the bot writes during the test, formatted as in production."""
    from bot.logs import JsonFormatter, RedactSecrets
    from tests.support.harness import SECRETS
    from tests.support.logcapture import root_records

    with root_records(JsonFormatter().format, filters=(RedactSecrets(SECRETS),)) as lines:
        yield lines
