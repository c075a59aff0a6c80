"""Issue 16 item 3: `incident resolve` racing the scheduler never deadlocks and never reaches a person
as "failed unexpectedly" — every transaction that touches an incident locks its row first (scheduler
runs included), and a deadlock or serialisation failure that still occurs is retried by the router.

Two Services on one database (two engines, two connection pools: what two processes are to
PostgreSQL), the real router and the real scheduler, run concurrently with asyncio.gather."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from bot.app import build_services
from bot.clock import FakeClock
from bot.incidents.models import Incident
from bot.models import ScheduledJob
from bot.router import Router
from tests.incidents.conftest import INCIDENT_TOML
from tests.support.harness import RESPONDER, make_settings


@pytest.fixture
def pg_url(pg_server):
    return asyncio.run(pg_server.create_database())


@pytest.mark.parametrize("rounds", [200])
async def test_resolve_racing_the_scheduler_never_fails(pg_url, tmp_path, fake_slack, rounds):
    settings = make_settings(tmp_path, pg_url, fake_slack.api_url, extra_toml=INCIDENT_TOML)
    clock = FakeClock()
    commands, worker = build_services(settings, clock), build_services(settings, clock)
    await commands.db.upgrade()
    router = Router(commands)
    outcomes = []
    try:
        for i in range(rounds):
            channel = f"CRACE{i}"
            declared = await router.handle_text("incident declare P1 checkout conversion down", actor=RESPONDER,
                                                channel=channel, surface="test")
            assert declared.outcome == "ok", declared.reply.text
            # The escalation's first level is due at once: it locks the job, updates the incident and
            # writes the timeline while the resolve locks the incident and stops the jobs.
            resolved, _ = await asyncio.gather(
                router.handle_text("incident resolve provider failover", actor=RESPONDER, channel=channel,
                                   surface="test"),
                worker.scheduler.run_due(worker))
            outcomes.append(resolved.outcome)
            assert resolved.outcome == "ok", (i, resolved.reply.text)
        async with worker.db.reading() as session:
            statuses = set((await session.execute(select(Incident.status))).scalars())
            active = (await session.execute(select(ScheduledJob.key).where(ScheduledJob.status == "active",
                                                                         ScheduledJob.incident_id.is_not(None)))).all()
        assert statuses == {"resolved"} and active == []
        assert outcomes == ["ok"] * rounds
    finally:
        await commands.db.dispose()
        await worker.db.dispose()
