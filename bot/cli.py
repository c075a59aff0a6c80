"""The `revops` command line: serve, worker, console, exec, click, db upgrade, audit verify,
plus the sub-commands families add (`revops preflight`). The composition root (bot/app.py)
calls `main(argv, families)`; this module imports no family."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from pathlib import Path

import uvicorn

try:  # a dependency where it builds (not Windows): a faster event loop for the long-running processes
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

from . import audit
from .console import Console
from .db import Database, run_upgrade
from .errors import SettingsError
from .family import CliCommand, Families
from .logs import setup_logging
from .runtime import Runtime
from .settings import Settings, example_config_path, load_settings
from .templating import render_check
from .web.app import create_app
from .web.guard import server_config
from .worker import Worker


def _settings(**overrides) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        print(f"revops: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _templates_ok(settings: Settings, families: Families) -> None:
    problems = render_check(settings, families.template_samples(settings))
    if problems:
        print(f"revops: configuration error: {problems[0]}", file=sys.stderr)
        raise SystemExit(2)


SERVE_LIMITS = {  # `serve` option → the setting it overrides (README: "HTTP limits")
    "header_timeout": "revops_header_timeout", "body_timeout": "revops_body_timeout",
    "keepalive_timeout": "revops_keepalive_timeout", "max_connections": "revops_max_connections",
}


def cmd_serve(args, families: Families) -> int:
    overrides = {setting: getattr(args, option) for option, setting in SERVE_LIMITS.items()
                 if getattr(args, option) is not None}
    if args.body_limit:
        overrides["revops_body_limits"] = ",".join(args.body_limit)
    settings = _settings(**overrides)
    _templates_ok(settings, families)
    setup_logging(settings)
    app = create_app(settings, families, with_worker=True if args.with_worker else None,
                     delivers=settings.serve_delivers)
    raise_open_files_limit(settings.env.revops_max_connections)
    # uvicorn shuts down gracefully on SIGTERM (the app's shutdown finishes or releases the outbox's
    # claims) and then raises the signal again with the handler it found: a handler that does
    # nothing lets the process end with status 0 instead of dying of the signal.
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)
    uvicorn.Server(server_config(app, host=args.host, port=args.port or settings.env.port)).run()
    return 0


def _stopped(signum, frame) -> None:
    """SIGTERM or SIGINT after uvicorn's graceful shutdown: nothing left to do."""


def raise_open_files_limit(connections: int) -> None:
    """Room for `connections` sockets plus the database's and Slack's: the soft limit of open
    files is raised towards the hard one (a common default soft limit is 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
        if target < wanted:
            logging.getLogger("revops.web").warning(
                "open files are limited to %d: lower REVOPS_MAX_CONNECTIONS (%d) or raise the limit", target, connections)


async def _run_until_signalled(worker: Worker, runtime: Runtime, grace: float) -> None:
    """Run the worker until SIGTERM or SIGINT; then claim nothing new, let the tick in progress
    finish (at most `grace` seconds), and release what this process still holds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running = asyncio.create_task(worker.run_forever(), name="worker")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    logging.getLogger("revops.worker").info("stopping (grace %.0fs)", grace)
    worker.stop()
    stopped = asyncio.create_task(runtime.deliverer.stop(grace))
    done, _ = await asyncio.wait({running}, timeout=grace)
    if not done:
        running.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await running
    await stopped
    stopping.cancel()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)


def cmd_worker(args, families: Families) -> int:
    settings = _settings()
    _templates_ok(settings, families)
    setup_logging(settings)

    async def main():
        runtime = Runtime(settings, families)
        await runtime.services.db.upgrade()
        worker = Worker(runtime.services, runtime.deliverer)
        homes = runtime.refresh_homes()
        try:
            if args.once:
                await worker.drain()
            else:
                await _run_until_signalled(worker, runtime, settings.env.revops_shutdown_grace.total_seconds())
        finally:
            if homes is not None:
                await homes.drain(timeout=5)
            await runtime.services.db.dispose()

    try:
        run_loop(main())
    except KeyboardInterrupt:
        pass
    return 0


def run_loop(main):
    """`asyncio.run(main)` on uvloop when it is installed, as uvicorn runs `serve` (its `loop="auto"`)."""
    if uvloop is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _with_console(settings: Settings, families: Families, user: str, channel: str, body) -> int:
    runtime = Runtime(settings, families)
    try:
        await runtime.services.db.upgrade()
    except Exception as exc:
        print(f"revops: the database is unavailable ({type(exc).__name__}); nothing was run", file=sys.stderr)
        return 1
    console = Console(runtime, user=user, channel=channel)
    try:
        return await body(console, runtime)
    finally:
        await runtime.services.db.dispose()


def cmd_console(args, families: Families) -> int:
    if args.demo:
        return _demo(args, families)
    settings = _settings()

    async def body(console, runtime):
        await console.repl()
        return 0

    return asyncio.run(_with_console(settings, families, args.as_user, args.channel, body))


def _demo(args, families: Families) -> int:
    """A fresh SQLite file, the example configuration, every family's sample data, and the
    tour: every family's lines, in order, through the console surface."""
    db_path = Path(args.db or "revops-demo.db")
    for suffix in ("", "-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite+aiosqlite:///{db_path}"
    os.environ["REVOPS_CONFIG"] = str(example_config_path())
    settings = _settings()

    async def body(console, runtime):
        await families.seed(runtime.services)
        console.write(f"revops demo: SQLite at {db_path}, roles from {example_config_path().name}, "
                      "sample data loaded. No Slack or Stripe account needed.\n")
        for user, line in families.tour:
            console.write(f"\n{user}$ {line}")
            await console.run_line(f"{line} --as {user}")
        if sys.stdin.isatty() and not args.no_repl:
            console.write("\nYour turn (try `help`, `as U0ADMIN`, `click N`, `quit`).")
            await console.repl()
        return 0

    return asyncio.run(_with_console(settings, families, args.as_user, args.channel, body))


def cmd_exec(args, families: Families) -> int:
    settings = _settings()

    async def body(console, runtime):
        await console.run_line(f"{args.text}")
        return 0

    text = args.text
    args.text = text
    return asyncio.run(_with_console(settings, families, args.as_user, args.channel, body))


def cmd_click(args, families: Families) -> int:
    settings = _settings()

    async def body(console, runtime):
        await console.click([str(args.number)], args.as_user)
        await runtime.deliverer.deliver_due()
        return 0

    return asyncio.run(_with_console(settings, families, args.as_user, args.channel, body))


def cmd_db_upgrade(args, families: Families) -> int:
    settings = _settings()
    try:
        run_upgrade(settings.env.database_url)
    except Exception as exc:
        print(f"revops: migration failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        return 1
    print("database migrated to head")
    return 0


def cmd_audit_verify(args, families: Families) -> int:
    settings = _settings()

    async def main() -> int:
        db = Database(settings.env.database_url)
        try:
            async with db.transaction() as session:
                check = await audit.verify(session)
        finally:
            await db.dispose()
        print(check.sentence())
        return 0 if check.ok else 1

    return asyncio.run(main())


def _family_command(command: CliCommand):
    def run(args, families: Families) -> int:
        return command.run(families.build_services(_settings()))

    return run


def build_parser(families: Families) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revops", description="Revenue and billing incident-response bot")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("serve", help="the HTTP app (Slack, Stripe webhooks, alerts, pages, metrics)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--with-worker", action="store_true", help="run the scheduler inside this process too")
    p.add_argument("--header-timeout", metavar="DURATION",
                   help="close a connection whose request headers take longer (default 10s; REVOPS_HEADER_TIMEOUT)")
    p.add_argument("--body-timeout", metavar="DURATION",
                   help="answer 408 to a body that takes longer (default 20s; REVOPS_BODY_TIMEOUT)")
    p.add_argument("--keepalive-timeout", metavar="DURATION",
                   help="close an idle kept-alive connection after it (default 5s; REVOPS_KEEPALIVE_TIMEOUT)")
    p.add_argument("--max-connections", metavar="N", type=int,
                   help="refuse connections past this many open (default 2048; REVOPS_MAX_CONNECTIONS)")
    p.add_argument("--body-limit", metavar="PATH=SIZE", action="append",
                   help="largest body of an endpoint, repeatable (defaults: /slack/events=1MiB, "
                        "/webhooks/stripe=1MiB, /alerts=64KiB, *=64KiB; REVOPS_BODY_LIMITS)")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("worker", help="the scheduler")
    p.add_argument("--once", action="store_true", help="run every job due now, deliver the posts, and exit")
    p.set_defaults(fn=cmd_worker)

    for name, fn in (("console", cmd_console),):
        p = sub.add_parser(name, help="the /revops commands without Slack (a REPL)")
        p.add_argument("--as", dest="as_user", default="U0CONSOLE")
        p.add_argument("--channel", default="C0CONSOLE")
        p.add_argument("--demo", action="store_true", help="fresh SQLite, example config, sample data, a tour")
        p.add_argument("--db", help="with --demo: the SQLite file (default revops-demo.db)")
        p.add_argument("--no-repl", action="store_true", help="with --demo: do not prompt afterwards")
        p.set_defaults(fn=fn)

    p = sub.add_parser("exec", help='run one command: revops exec "TEXT" --as UID')
    p.add_argument("text")
    p.add_argument("--as", dest="as_user", required=True)
    p.add_argument("--channel", default="C0CONSOLE")
    p.set_defaults(fn=cmd_exec)

    p = sub.add_parser("click", help="click button N shown by the console: revops click N --as UID")
    p.add_argument("number", type=int)
    p.add_argument("--as", dest="as_user", required=True)
    p.add_argument("--channel", default="C0CONSOLE")
    p.set_defaults(fn=cmd_click)

    p = sub.add_parser("db", help="database tasks")
    dbsub = p.add_subparsers(dest="dbcmd", required=True)
    q = dbsub.add_parser("upgrade", help="migrate to head")
    q.set_defaults(fn=cmd_db_upgrade)

    p = sub.add_parser("audit", help="audit log tasks")
    asub = p.add_subparsers(dest="auditcmd", required=True)
    q = asub.add_parser("verify", help="check the hash chain; exit 1 if a record was altered or removed")
    q.set_defaults(fn=cmd_audit_verify)

    for command in families.cli:  # `revops preflight`...
        p = sub.add_parser(command.name, help=command.help)
        p.set_defaults(fn=_family_command(command))
    return parser


def main(argv: list[str] | None, families: Families) -> int:
    args = build_parser(families).parse_args(argv)
    return args.fn(args, families) or 0
