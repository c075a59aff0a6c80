"""Several workers on PostgreSQL: each scheduled message is posted once, and a
worker killed with SIGKILL in the middle of a job loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

import asyncpg
import pytest
from sqlalchemy import func, select

from bot.app import build_services
from bot.models import OutgoingMessage
from bot.scheduler import run_due
from bot.text import from_json
from tests.incidents.conftest import outbox
from tests.support.harness import BOT_TOKEN, RESPONDER, Bot, make_settings

postgres_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
_SEQ = re.compile(r"(Revenue-team update|Engineering update) (\d+) — \[P1\] incident #(\d+)")


def sequences(texts: list[str]) -> Counter:
    found = Counter()
    for text in texts:
        match = _SEQ.search(text)
        if match:
            found[(match.group(3), match.group(1), int(match.group(2)))] += 1
    return found


@postgres_only
async def test_three_workers_post_each_scheduled_message_exactly_once(fast_bot, clock, fake_slack):
    for channel in ("C0A", "C0B", "C0C"):
        fast_bot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER, channel=channel)
        fast_bot.slash_text("incident ack", user=RESPONDER, channel=channel)
    workers = [build_services(fast_bot.settings, clock) for _ in range(3)]
    try:
        for _ in range(20):  # 5 minutes in 15-second steps, three workers racing on every tick
            clock.advance(timedelta(seconds=15))
            await asyncio.gather(*(run_due(w) for w in workers))
        posts = [str(m.reply) for m in await outbox(workers[0])]
        counts = sequences(posts)
        assert counts and max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]
        for incident in ("1", "2", "3"):
            assert sorted(n for (i, kind, n) in counts if i == incident and kind == "Revenue-team update") == \
                list(range(1, 11))  # 30 s cadence over 300 s
            assert sorted(n for (i, kind, n) in counts if i == incident and kind == "Engineering update") == \
                list(range(1, 6))
        # and what reached Slack, once the live bot's outbox is drained: once each
        await outbox_drained(lambda: pending_posts(workers[0]))
    finally:
        for w in workers:
            await w.db.dispose()
    delivered = sequences([c.params.get("text", "") for c in fake_slack.calls_of("chat.postMessage")])
    assert len(delivered) == 45 and max(delivered.values()) == 1


async def pending_posts(services) -> int:
    async with services.db.transaction() as s:
        return (await s.execute(select(func.count()).select_from(OutgoingMessage)
                                .where(OutgoingMessage.status == "pending"))).scalar()


async def outbox_drained(pending, timeout: float = 30) -> None:
    """Wait until nothing is left to send (the deliverer of another thread or process sends it):
    after that nothing more can reach Slack, so what it received is final."""
    deadline = time.monotonic() + timeout
    while (left := await pending()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert left == 0, f"{left} post(s) still pending after {timeout}s"


def _worker(settings, fake_slack, tmp_path, name: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVOPS_", "SLACK_", "STRIPE_", "DATABASE_"))}
    env.update({
        "DATABASE_URL": settings.env.database_url,
        "REVOPS_CONFIG": str(settings.config_path),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": fake_slack.api_url,
        "REVOPS_TICK": "300ms",
        "REVOPS_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)


async def _wait_blocked_on_outbox(conn, timeout: float = 20) -> None:
    # pg_stat_activity is a per-transaction snapshot: look from outside the locking transaction
    deadline = time.time() + timeout
    while time.time() < deadline:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query ILIKE 'INSERT INTO outgoing_messages%'")
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the worker never reached the job's post")


@postgres_only
async def test_a_worker_killed_mid_job_loses_no_scheduled_post(tmp_path, db_url, fake_slack):
    toml = '\n[severity.P1]\nack = "15m"\nresolve = "1h"\nrevenue_update = "2s"\nengineering_update = "1h"\n'
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=toml)
    bot = Bot(settings, fake_slack).start()  # real clock: the workers are separate processes
    workers: list[subprocess.Popen] = []
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    watcher = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        bot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
        bot.slash_text("incident ack", user=RESPONDER)
        fake_slack.wait_for("chat.postMessage", 3)  # initial, ack, the commander's DM
        # Hold the outbox: a worker that claims the due job blocks on writing its post, mid-transaction.
        await conn.execute("BEGIN")
        await conn.execute("LOCK TABLE outgoing_messages IN EXCLUSIVE MODE")
        first = _worker(settings, fake_slack, tmp_path, "first")
        workers.append(first)
        await _wait_blocked_on_outbox(watcher)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        workers.append(_worker(settings, fake_slack, tmp_path, "second"))
        await conn.execute("ROLLBACK")  # the outbox is free again

        deadline = time.time() + 30
        while time.time() < deadline:  # the second worker takes over the job the first one died in
            texts = [c.params.get("text", "") for c in fake_slack.calls_of("chat.postMessage")]
            if any("Revenue-team update 2 " in t for t in texts):
                break
            await asyncio.sleep(0.1)
        for proc in workers:  # no more jobs from here on
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        # Each scheduled post was written once (so the outbox, whose claims send a row once, cannot
        # double it later) and what reached Slack so far came once; updates 1 and 2 have been sent.
        written = await watcher.fetch("SELECT reply->'text' AS text FROM outgoing_messages")
        rows = sequences([str(from_json(json.loads(r["text"]))) for r in written])  # typed text stored as JSON
        assert rows and max(rows.values()) == 1, rows
        texts = [c.params.get("text", "") for c in fake_slack.calls_of("chat.postMessage")]
        counts = sequences(texts)
        assert counts[("1", "Revenue-team update", 1)] == 1, texts
        assert counts[("1", "Revenue-team update", 2)] == 1, texts
        assert max(counts.values()) == 1 and set(counts) <= set(rows)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        await conn.close()
        await watcher.close()
        bot.stop()
