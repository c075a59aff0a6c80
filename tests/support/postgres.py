"""A throwaway PostgreSQL server for the test run (Debian's `postgresql` package).

Set REVOPS_TEST_PG_URL (postgresql://user@host:port/db) to use a server you run
yourself instead."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import asyncpg

from .net import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    def __init__(self, *, durable: bool = False):
        # durable: fsync, synchronous_commit and full_page_writes on (PostgreSQL's defaults), as a
        # benchmark of durable commits needs; the test run turns them off, it needs no crash safety.
        self.durable = durable
        self.external = os.environ.get("REVOPS_TEST_PG_URL")
        self.datadir: str | None = None
        self.port: int | None = None
        self.admin_url: str = self.external or ""

    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    def start(self) -> "PostgresServer":
        if self.external:
            return self
        initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError(
                "PostgreSQL server binaries not found: run `apt-get install -y postgresql` "
                "(scripts/test does this) or set REVOPS_TEST_PG_URL"
            )
        self.datadir = tempfile.mkdtemp(prefix="revops-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
        result = self._run([initdb, "-D", self.datadir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr[-500:]}")
        self.port = free_port()
        durability = ("-c fsync=on -c synchronous_commit=on -c full_page_writes=on" if self.durable else
                      "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.datadir} {durability} -c max_connections=300"
        result = self._run([pg_ctl, "-D", self.datadir, "-o", opts, "-l", f"{self.datadir}/log", "-w", "-t", "60",
                            "start"])
        if result.returncode != 0:
            log = open(f"{self.datadir}/log").read()[-1000:] if os.path.exists(f"{self.datadir}/log") else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr[-500:]} {log}")
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self

    def stop(self) -> None:
        if self.external or not self.datadir:
            return
        pg_ctl = _binary("pg_ctl")
        self._run([pg_ctl, "-D", self.datadir, "-m", "immediate", "stop"])
        shutil.rmtree(self.datadir, ignore_errors=True)

    async def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        for attempt in range(5):
            try:
                conn = await asyncpg.connect(self.admin_url)
                break
            except (OSError, asyncpg.PostgresError):
                time.sleep(0.5)
        else:
            conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        base = self.admin_url.rsplit("/", 1)[0]
        return base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
