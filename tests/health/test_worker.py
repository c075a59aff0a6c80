"""`revops worker` probes on its schedule (so the p95 has data), once per interval
whatever the number of workers (the probe round is a job of the one scheduler); a
production service going down is recorded (held, not sent) for the incident channel
in panic mode."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from bot.clock import FakeClock
from bot.flags import set_flag
from bot.health.history import recent_p95
from bot.health.models import HealthProbe
from bot.health.selfcheck import heartbeat_check
from bot.models import OutgoingMessage
from bot.outbox import Deliverer
from bot.reply import Reply
from bot.app import build_services
from bot.worker import Worker
from tests.support.harness import CHANNEL, make_settings


async def test_scheduled_probes_feed_the_p95_and_hold_down_posts_in_panic(tmp_path, db_url, fake_slack, monitored):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=monitored.toml())
    clock = FakeClock()
    services, other = build_services(settings, clock=clock), build_services(settings, clock=clock)
    assert services.scheduler.kinds["health_probes"].every_for(settings) == timedelta(seconds=1)
    await services.db.upgrade()
    try:
        async with services.db.transaction() as s:
            await set_flag(s, "panic", True, actor="U0ADMIN", at=clock.now())
        first = Worker(services, Deliverer(services.db, clock, None))
        second = Worker(other, Deliverer(other.db, clock, None))  # another process, its own engine
        assert "global:health_probes" in await first.tick()  # the first round is due at once
        assert "global:health_probes" not in await second.tick()  # same interval: the first worker had it

        async def probes() -> int:
            async with services.db.transaction() as s:
                return (await s.execute(select(func.count()).select_from(HealthProbe))).scalar()

        assert await probes() == 6
        clock.advance(1)
        assert "global:health_probes" in await second.drain()  # next interval: whichever worker comes first
        assert await probes() == 12
        assert "global:health_probes" not in await first.drain()

        async with services.db.transaction() as s:
            posts = (await s.execute(select(OutgoingMessage))).scalars().all()
            assert sorted(str(Reply.from_dict(p.reply).text).split()[0] for p in posts) == ["billing-api", "ledger", "search"]
            assert {(p.channel, p.status) for p in posts} == {(CHANNEL, "held")}  # recorded, never sent
            latest = (await s.execute(select(HealthProbe).where(HealthProbe.service == "checkout")
                                      .order_by(HealthProbe.id.desc()).limit(1))).scalar_one()
            (p95,) = (await recent_p95(s, [_Result("checkout", "production", 1000.0)], at=clock.now())).values()
            assert p95.samples == 2 and p95.within_slo and latest.version == "2.0.0"
            beat = await heartbeat_check(s, settings, clock.now() + timedelta(seconds=1))
            assert beat.status == "pass" and "last heartbeat 1s ago" in beat.detail
            stale = await heartbeat_check(s, settings, clock.now() + timedelta(minutes=10))
            assert stale.status == "warn"
        assert fake_slack.calls_of("chat.postMessage") == []
    finally:
        await services.db.dispose()
        await other.db.dispose()


class _Result:
    def __init__(self, name, env, slo_ms):
        self.name, self.env, self.slo_ms = name, env, slo_ms

    @property
    def key(self):
        return (self.name, self.env)
