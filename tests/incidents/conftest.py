"""Incident fixtures: a live bot on a FakeClock with severity clocks and escalation
levels configured, plus a second set of services (own engine, same database and
clock) for driving the scheduler and looking inside."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.clock import FakeClock
from bot.incidents.models import Incident, TimelineEntry
from bot.models import OutgoingMessage, ScheduledJob
from bot.text import from_json
from bot.app import build_services
from tests.support.harness import Bot, make_settings

INCIDENT_TOML = """
[severity.P1]
ack = "15m"
resolve = "1h"
revenue_update = "30m"
engineering_update = "1h"

[escalation]
L1 = { after = "0m", notify = ["U0ONCALL"] }
L2 = { after = "15m", notify = ["U0EM"] }
L3 = { after = "1h", notify = ["U0VP"] }
"""


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def incident_settings(tmp_path, db_url, fake_slack):
    return make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=INCIDENT_TOML)


@pytest.fixture
def ibot(incident_settings, fake_slack, clock):
    running = Bot(incident_settings, fake_slack, clock=clock).start()
    yield running
    running.stop()


@pytest.fixture
async def services(ibot, clock):
    """The scheduler's side: its own engine on the bot's database, the same FakeClock."""
    svc = build_services(ibot.settings, clock)
    yield svc
    await svc.db.dispose()


async def outbox(services, channel: str | None = None, status: str | None = None) -> list[OutgoingMessage]:
    async with services.db.transaction() as s:
        stmt = select(OutgoingMessage).order_by(OutgoingMessage.id)
        if channel:
            stmt = stmt.where(OutgoingMessage.channel == channel)
        if status:
            stmt = stmt.where(OutgoingMessage.status == status)
        return list((await s.execute(stmt)).scalars().all())


# The other families' periodic jobs run on the same scheduler; an incident test looks at its own.
OTHER_FAMILIES_JOBS = ("global:grant_expiry", "global:health_probes", "global:invoice_action_expiry")


def incident_runs(keys: list[str]) -> list[str]:
    """The jobs a scheduler round ran, without the other families' sweeps."""
    return [key for key in keys if key not in OTHER_FAMILIES_JOBS]


def head(message) -> str:
    """A queued post's headline, as its plain reading (the outbox stores typed text as JSON)."""
    return str(from_json(message.reply["text"])).strip()


def heads(messages) -> list[str]:
    return [head(m) for m in messages]


async def timeline(services, incident_id: int) -> list[TimelineEntry]:
    async with services.db.transaction() as s:
        return list((await s.execute(
            select(TimelineEntry).where(TimelineEntry.incident_id == incident_id).order_by(TimelineEntry.id)
        )).scalars().all())


async def incident(services, incident_id: int) -> Incident:
    async with services.db.transaction() as s:
        return await s.get(Incident, incident_id)


async def jobs(services, incident_id: int | None = None) -> list[ScheduledJob]:
    async with services.db.transaction() as s:
        stmt = select(ScheduledJob).order_by(ScheduledJob.id)
        if incident_id is not None:
            stmt = stmt.where(ScheduledJob.incident_id == incident_id)
        return list((await s.execute(stmt)).scalars().all())


FAST_TOML = """
[severity.P1]
ack = "15m"
resolve = "1h"
revenue_update = "30s"
engineering_update = "1m"
"""


@pytest.fixture
def fast_settings(tmp_path, db_url, fake_slack):
    """Second-long cadences, no escalation levels."""
    return make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=FAST_TOML)


@pytest.fixture
def fast_bot(fast_settings, fake_slack, clock):
    running = Bot(fast_settings, fake_slack, clock=clock).start()
    yield running
    running.stop()


@pytest.fixture
async def fast_services(fast_bot, clock):
    svc = build_services(fast_bot.settings, clock)
    yield svc
    await svc.db.dispose()
