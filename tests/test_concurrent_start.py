"""Issue 16 item 4: any number of processes started at once on an empty database end with one
migration run and every process up (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.db import Database

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 6

# Each process imports everything first, then waits for the go file, so that their migrations start
# within a few milliseconds of each other (Python's start-up would otherwise space them out).
STARTER = """
import os, sys, time
from bot.db import run_upgrade
go = sys.argv[2]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
run_upgrade(sys.argv[1])
print("up", flush=True)
"""


def start_all_at_once(url: str, tmp_path: Path) -> list[subprocess.CompletedProcess]:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", STARTER, url, str(go)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(PROCESSES)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


async def _migrated_once(url: str) -> tuple[str | None, list[tuple]]:
    db = Database(url)
    try:
        head = await db.current_revision()
        async with db.reading() as session:
            rows = (await session.execute(text("SELECT version_num FROM alembic_version"))).all()
        return head, [tuple(r) for r in rows]
    finally:
        await db.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_processes_started_at_once_on_an_empty_database_all_come_up(kind, request, tmp_path):
    # PostgreSQL: a fresh empty database twice, so that the race (`CREATE TABLE alembic_version` in
    # two processes) gets two chances; SQLite's BEGIN IMMEDIATE needs one.
    for attempt in range(2 if kind == "postgresql" else 1):
        if kind == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path}/revops{attempt}.db"
        else:
            url = asyncio.run(request.getfixturevalue("pg_server").create_database())
        (tmp_path / str(attempt)).mkdir()
        results = start_all_at_once(url, tmp_path / str(attempt))
        failed = [r.stderr[-1500:] for r in results if r.returncode != 0]
        assert not failed, failed
        assert all(r.stdout.strip().endswith("up") for r in results)
        head, rows = asyncio.run(_migrated_once(url))
        assert head is not None and rows == [(head,)]  # at head, one version row
