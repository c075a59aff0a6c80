"""`revops worker` probes on its schedule (so the p95 has data), once per interval
whatever the number of workers; a production service going down is recorded (held,
not sent) for the incident channel in panic mode."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from bot.clock import FakeClock
from bot.flags import set_flag
from bot.health.history import recent_p95
from bot.health.models import HealthProbe
from bot.health.selfcheck import heartbeat_check
from bot.jobs import periodic_jobs
from bot.models import OutgoingMessage
from bot.outbox import Deliverer
from bot.app import build_services
from bot.worker import Worker
from tests.support.harness import CHANNEL, make_settings


async def test_scheduled_probes_feed_the_p95_and_hold_down_posts_in_panic(tmp_path, db_url, fake_slack, monitored):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=monitored.toml())
    (job,) = [j for j in periodic_jobs(settings) if j.name == "health_probes"]
    assert job.every == timedelta(seconds=1)
    clock = FakeClock()
    services = build_services(settings, clock=clock)
    await services.db.upgrade()
    try:
        async with services.db.transaction() as s:
            await set_flag(s, "panic", True, actor="U0ADMIN", at=clock.now())
        first, second = (Worker(services, Deliverer(services.db, clock, None), jobs=[job]) for _ in range(2))
        await first.tick()
        await second.tick()  # same interval: the other worker already has this round

        async def probes() -> int:
            async with services.db.transaction() as s:
                return (await s.execute(select(func.count()).select_from(HealthProbe))).scalar()

        assert await probes() == 6
        clock.advance(1)
        await job.run(services)  # next interval
        assert await probes() == 12

        async with services.db.transaction() as s:
            posts = (await s.execute(select(OutgoingMessage))).scalars().all()
            assert sorted(p.reply["text"].split("*")[1] for p in posts) == ["billing-api", "ledger", "search"]
            assert {(p.channel, p.status) for p in posts} == {(CHANNEL, "held")}  # recorded, never sent
            latest = (await s.execute(select(HealthProbe).where(HealthProbe.service == "checkout")
                                      .order_by(HealthProbe.id.desc()).limit(1))).scalar_one()
            (p95,) = (await recent_p95(s, [_Result("checkout", "production", 1000.0)], at=clock.now())).values()
            assert p95.samples == 2 and p95.within_slo and latest.version == "2.0.0"
            beat = await heartbeat_check(s, settings, clock.now())
            assert beat.status == "pass" and "last heartbeat 1s ago" in beat.detail
            stale = await heartbeat_check(s, settings, clock.now() + timedelta(minutes=10))
            assert stale.status == "warn"
        assert fake_slack.calls_of("chat.postMessage") == []
    finally:
        await services.db.dispose()


class _Result:
    def __init__(self, name, env, slo_ms):
        self.name, self.env, self.slo_ms = name, env, slo_ms

    @property
    def key(self):
        return (self.name, self.env)
