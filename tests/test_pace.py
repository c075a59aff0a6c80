"""One pace per channel across every process, and dying processes (issue 16 items 1, 2, 6):
five delivering processes keep one channel at one post per second, in order, with no 429; a 429
on one channel does not hold back another; a worker stopped with SIGTERM while it holds a claim
exits 0 at once and releases it; a worker killed with SIGKILL mid-send doubles no post."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import httpx
import pytest
from sqlalchemy import func, select

from bot.app import build_services
from bot.clock import Clock
from bot.models import ChannelPace, OutgoingMessage
from bot.outbox import Deliverer, enqueue
from bot.reply import Reply
from bot.slack.client import SlackSender, make_web_client
from tests.support.harness import BOT_TOKEN, make_settings
from tests.support.net import free_port

postgres_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
CHANNEL = "C0PACE"


async def _services(tmp_path, db_url, fake_slack, **env):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, **env)
    services = build_services(settings, Clock())
    await services.db.upgrade()
    return settings, services


async def _enqueue(services, channel: str, texts: list[str]) -> None:
    async with services.db.transaction() as s:
        for text in texts:
            await enqueue(s, channel=channel, reply=Reply(text, private=False), at=services.clock.now())


async def _pending(services) -> int:
    async with services.db.transaction() as s:
        return (await s.execute(select(func.count()).select_from(OutgoingMessage)
                                .where(OutgoingMessage.status == "pending"))).scalar()


async def _drained(services, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (left := await _pending(services)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert left == 0, f"{left} post(s) still pending after {timeout}s"


def _process(settings, fake_slack, tmp_path, name: str, command: str = "worker", **env) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "bot", command], env={**_env(settings, fake_slack), **env},
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)


def _env(settings, fake_slack) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REVOPS_", "SLACK_", "STRIPE_", "DATABASE_"))}
    clean.update({
        "DATABASE_URL": settings.env.database_url,
        "REVOPS_CONFIG": str(settings.config_path),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": fake_slack.api_url,
        "REVOPS_TICK": "200ms",
        "REVOPS_POST_INTERVAL": "1s",
        "REVOPS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    })
    return clean


def _stop_all(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        if p.poll() is None:
            p.kill()
    for p in processes:
        p.wait(timeout=10)


def _posts(fake_slack, channel: str):
    return [c for c in fake_slack.calls_of("chat.postMessage") if c.params.get("channel") == channel]


@postgres_only
async def test_five_processes_keep_one_channel_at_one_post_a_second_in_order(tmp_path, db_url, fake_slack):
    settings, services = await _services(tmp_path, db_url, fake_slack)
    fake_slack.channel_rate = 1.0  # like Slack: a second post within a second answers 429
    texts = [f"pace post {n}" for n in range(1, 31)]
    await _enqueue(services, CHANNEL, texts)
    workers = [_process(settings, fake_slack, tmp_path, f"w{i}") for i in range(5)]
    try:
        await _drained(services, timeout=60)
    finally:
        _stop_all(workers)
        await services.db.dispose()
    calls = _posts(fake_slack, CHANNEL)
    assert [c.params.get("text") for c in calls] == texts  # in order, each once, and no 429 (no retry)
    gaps = [b.at - a.at for a, b in zip(calls, calls[1:])]
    assert min(gaps) >= 0.95, sorted(gaps)[:3]


async def test_a_429_on_one_channel_does_not_hold_back_another(tmp_path, db_url, fake_slack):
    settings, services = await _services(tmp_path, db_url, fake_slack, revops_post_interval="0.2s")
    sender = SlackSender(make_web_client(settings, rate_limit_retries=0))
    deliverer = Deliverer(services.db, services.clock, sender, interval=0.2)
    fake_slack.fail_channel("C0SLOW", retry_after=5, times=1)
    await _enqueue(services, "C0SLOW", ["slow 1", "slow 2"])
    await _enqueue(services, "C0FAST", [f"fast {n}" for n in range(1, 6)])
    started = time.monotonic()
    runner = asyncio.create_task(deliverer.run(every=0.1))
    try:
        await fake_slack.wait("chat.postMessage", 5, timeout=4,
                              where=lambda c: c.params.get("channel") == "C0FAST" and c.ts is not None)
        fast_done = time.monotonic() - started
        # the slow channel sleeps Slack's Retry-After, alone
        assert [c.params.get("text") for c in _posts(fake_slack, "C0SLOW")] == ["slow 1"]
        await fake_slack.wait("chat.postMessage", 3, timeout=10,
                              where=lambda c: c.params.get("channel") == "C0SLOW")
        slow_done = time.monotonic() - started
    finally:
        await deliverer.stop(2)
        await runner
        await services.db.dispose()
    assert fast_done < 3, fast_done  # five posts 0.2 s apart, untouched by the other channel's 5 s
    assert slow_done >= 4.5, slow_done
    assert [c.params.get("text") for c in _posts(fake_slack, "C0FAST")] == [f"fast {n}" for n in range(1, 6)]
    slow = _posts(fake_slack, "C0SLOW")
    assert [c.params.get("text") for c in slow if c.ts] == ["slow 1", "slow 2"]  # in order after the 429


async def _claimed(services, channel: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with services.db.transaction() as s:
            pace = await s.get(ChannelPace, channel)
            if pace is not None and pace.claimed_by:
                return pace.claimed_by
        await asyncio.sleep(0.01)
    raise AssertionError("no process claimed the channel")


def _holder(processes: list[subprocess.Popen], claimed_by: str) -> subprocess.Popen:
    """The process whose deliverer holds a claim (its name starts with its pid)."""
    return next(p for p in processes if claimed_by.startswith(f"{p.pid}-"))


async def _claimed_mid_send(services, fake_slack, processes, before: int) -> subprocess.Popen:
    """Wait for a post in flight (Slack has it, the sender waits for the answer); its sender."""
    await fake_slack.wait("chat.postMessage", before + 1, timeout=30,
                          where=lambda c: c.params.get("channel") == CHANNEL)
    return _holder(processes, await _claimed(services, CHANNEL))


@postgres_only
async def test_sigterm_of_a_worker_holding_a_claim_exits_0_and_releases_it(tmp_path, db_url, fake_slack):
    settings, services = await _services(tmp_path, db_url, fake_slack)
    fake_slack.delay = 1.5  # Slack answers slowly: a send is in flight when the worker is told to stop
    texts = [f"term post {n}" for n in range(1, 7)]
    await _enqueue(services, CHANNEL, texts)
    workers = [_process(settings, fake_slack, tmp_path, f"w{i}") for i in range(3)]
    try:
        holder = await _claimed_mid_send(services, fake_slack, workers, before=0)
        fake_slack.delay = 0
        term_at, term_wall = time.monotonic(), time.time()
        holder.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(holder.wait, 15)
        stopped_in = time.monotonic() - term_at
        assert code == 0, code
        assert stopped_in < 6, stopped_in  # finished its send, released, exited (well within the grace)
        await _drained(services, timeout=40)
        async with services.db.transaction() as s:
            assert (await s.execute(select(func.count()).select_from(ChannelPace)
                                    .where(ChannelPace.claimed_by.like(f"{holder.pid}-%")))).scalar() == 0
    finally:
        _stop_all(workers)
        await services.db.dispose()
    accepted = [c for c in _posts(fake_slack, CHANNEL) if c.ts]
    assert [c.params.get("text") for c in accepted] == texts  # each once, in order
    after = [c.at for c in accepted if c.at > term_wall]
    gaps = [b - a for a, b in zip([term_wall, *after], after)]
    assert after and max(gaps) < 4, gaps  # the channel went on at its pace: no lease waited out


@postgres_only
async def test_a_worker_killed_mid_send_does_not_double_the_post(tmp_path, db_url, fake_slack):
    settings, services = await _services(tmp_path, db_url, fake_slack)
    texts = [f"kill post {n}" for n in range(1, 5)]
    await _enqueue(services, CHANNEL, texts)
    fake_slack.delay = 3.0  # Slack takes the post; its sender dies before it hears back
    workers = [_process(settings, fake_slack, tmp_path, f"w{i}") for i in range(3)]
    try:
        holder = await _claimed_mid_send(services, fake_slack, workers, before=0)
        holder.kill()
        await asyncio.to_thread(holder.wait, 10)
        killed_wall = time.time()
        fake_slack.delay = 0
        await _drained(services, timeout=40)
    finally:
        _stop_all(workers)
        await services.db.dispose()
    accepted = [c for c in _posts(fake_slack, CHANNEL) if c.ts]
    assert [c.params.get("text") for c in accepted] == texts  # the first post once: found, not sent again
    assert fake_slack.attempts("conversations.history") >= 1
    silent = accepted[1].at - killed_wall
    assert silent < 10 + 3, silent  # the lease (10 s), not 60 s


@postgres_only
async def test_sigterm_of_serve_mid_send_finishes_the_send_and_exits_0(tmp_path, db_url, fake_slack):
    settings, services = await _services(tmp_path, db_url, fake_slack)
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
                             env={**_env(settings, fake_slack), "REVOPS_SERVE_DELIVERS": "true"}, cwd=tmp_path,
                             stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        fake_slack.delay = 1.5
        await _enqueue(services, CHANNEL, ["serve post"])
        await fake_slack.wait("chat.postMessage", 1, timeout=20)
        term_at = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(serve.wait, 15)
        assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
        assert time.monotonic() - term_at < 6
        async with services.db.transaction() as s:
            row = (await s.execute(select(OutgoingMessage).where(OutgoingMessage.channel == CHANNEL))).scalar_one()
            assert (row.status, row.claimed_by) == ("sent", None)  # the send in flight was finished
    finally:
        _stop_all([serve])
        await services.db.dispose()
    assert len(_posts(fake_slack, CHANNEL)) == 1


async def test_a_send_still_in_flight_when_the_grace_runs_out_is_not_sent_twice(tmp_path, db_url, fake_slack):
    settings, services = await _services(tmp_path, db_url, fake_slack)
    first = Deliverer(services.db, services.clock, SlackSender(make_web_client(settings, rate_limit_retries=0)),
                      interval=0.1)
    second = Deliverer(services.db, services.clock, SlackSender(make_web_client(settings, rate_limit_retries=0)),
                       interval=0.1)
    await _enqueue(services, CHANNEL, ["grace post"])
    fake_slack.delay = 3.0  # Slack has the post; the answer comes after the grace
    sending = asyncio.create_task(first.deliver_due())
    try:
        await fake_slack.wait("chat.postMessage", 1, timeout=10)
        await first.stop(grace=0.2)  # gives up waiting: releases its claims with the send in flight
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        fake_slack.delay = 0
        assert await second.deliver_due() == 1  # found in the channel's history: marked sent, not posted
        async with services.db.transaction() as s:
            row = (await s.execute(select(OutgoingMessage))).scalar_one()
    finally:
        await services.db.dispose()
    assert len(_posts(fake_slack, CHANNEL)) == 1 and fake_slack.attempts("conversations.history") == 1
    assert (row.status, row.ts) == ("sent", _posts(fake_slack, CHANNEL)[0].ts)
