"""The one path every request takes, whatever surface it came from:

    parse -> authorize (role) -> run (with dry-run applied) -> record (audit,
    recorders such as the incident timeline, posts) in the same transaction ->
    a neutral Reply.

Units of work (bot/db.py):

- An action that changes nothing (quick or slow: `help`, `customer`, `health`, `reconcile`) runs
  its handler in a read unit: no write lock, whatever it waits on. What it leaves to record
  (posts, timeline entries) is written afterwards in ONE short transaction, with no network call
  inside, and only when there is something to write; the records of actions finishing at the
  same time share it (group commit, `_Recording`).
- An action that changes things reads the flags in a read unit, then runs its handler in the unit
  of work that writes, together with its records. That unit begins at its first statement, so a
  handler that calls Stripe does so BEFORE it touches `ctx.session`; a network call once the unit
  has begun fails loudly (`db.assert_no_write_transaction`). Dry-run (simulate) runs the handler in
  a unit that is rolled back, then writes the records afterwards, as a read's are.

Roles, dry-run, panic, replays and audit are enforced here and nowhere else. A surface that can
be replayed (Slack: a signed request resent inside its 5-minute window) hands its delivery keys
(`bot.deliveries.delivery_keys`). Every delivery is taken first in this process (a replay landing
here is answered "already received" at once); an action that changes things then claims its keys
in a short transaction of its own before it runs, and a read that leaves records claims them in
the transaction that writes its records, so a delivery already claimed by another replica runs
(or records) nothing again. A read that records nothing is not claimed in the database: on
another replica it would answer the same person again and change nothing, and a commit per
`help` would cost every quick look (SPEC §10).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable

from sqlalchemy.exc import IntegrityError

from . import audit, deliveries
from .context import Context
from .db import CONFLICT_RETRIES, is_transient_conflict
from .errors import DatabaseUnavailable, PermissionDenied, RevopsError, UsageError
from .flags import read_flags
from .groupcommit import GroupCommit
from .logs import request_id as current_request_id
from .metrics import REQUESTS
from .outbox import enqueue
from .reply import Reply
from .roles import Role, role_of
from .services import Services
from .text import Code, Icon, Text

log = logging.getLogger("revops.router")

ALREADY_RECEIVED = "Already received: this request is being handled or was handled, and was not run again."


@dataclass
class ActionRecord:
    """What the recording point sees of every command or click that ran."""

    name: str
    kind: str  # command | click
    actor: str
    channel: str | None
    args: dict[str, Any]
    outcome: str
    mutating: bool
    summary: str
    at: datetime
    ctx: Context
    delivery: tuple[str, ...] = ()  # a read's delivery keys, claimed with its records


@dataclass
class Outcome:
    reply: Reply
    name: str
    outcome: str  # ok | dry_run | denied | usage | failed | error
    posts: int = 0


class Router:
    def __init__(self, services: Services):
        self.services = services
        self._recording = _Recording(self)
        self._claims = deliveries.Claims(services.db)
        self._recent = deliveries.Recent()

    def parse(self, text: str) -> tuple[Any, dict[str, Any]] | UsageError:
        """The command and its arguments, or what was wrong (a surface that must know, say,
        whether the command is slow before running it parses once and hands this on)."""
        try:
            return self.services.registry.find(text)
        except UsageError as exc:
            return exc

    async def handle_text(self, text: str, *, actor: str, channel: str | None, surface: str,
                          request_id: str | None = None,
                          parsed: tuple[Any, dict[str, Any]] | UsageError | None = None,
                          delivery: tuple[str, ...] = ()) -> Outcome:
        parsed = self.parse(text) if parsed is None else parsed
        if isinstance(parsed, UsageError):
            REQUESTS.labels(command="unknown", outcome="usage").inc()
            return Outcome(usage_reply(parsed), "unknown", "usage")
        command, args = parsed
        return await self._run(
            name=command.name, kind="command", args=args, actor=actor, channel=channel, surface=surface,
            needed=command.role_for(args), mutating=command.mutates(args), dry_run_mode=command.dry_run,
            call=lambda ctx: command.handler(ctx, args), usage=command.usage, request_id=request_id,
            delivery=delivery,
        )

    async def handle_click(self, action_id: str, value: str, *, actor: str, channel: str | None, surface: str,
                           message_ref: str | None = None, request_id: str | None = None,
                           delivery: tuple[str, ...] = ()) -> Outcome:
        try:
            action = self.services.registry.action(action_id)
        except UsageError as exc:
            REQUESTS.labels(command="unknown-button", outcome="usage").inc()
            return Outcome(Reply(Text(exc.text)), "unknown-button", "usage")
        return await self._run(
            name=action.name, kind="click", args={"value": value}, actor=actor, channel=channel, surface=surface,
            needed=action.role, mutating=action.mutating, dry_run_mode=action.dry_run,
            call=lambda ctx: action.handler(ctx, value), usage=None, request_id=request_id,
            message_ref=message_ref, delivery=delivery,
        )

    async def _run(self, *, name: str, kind: str, args: dict[str, Any], actor: str, channel: str | None,
                   surface: str, needed: Role, mutating: bool, dry_run_mode: str,
                   call: Callable[[Context], Awaitable[Reply]], usage: str | None,
                   request_id: str | None, message_ref: str | None = None,
                   delivery: tuple[str, ...] = ()) -> Outcome:
        services = self.services
        role = role_of(services.settings.cfg.roles, actor)
        request_id = request_id or (current_request_id.get() if current_request_id.get() != "-" else uuid.uuid4().hex[:12])
        try:
            if delivery and not self._recent.first(delivery):
                return self._replay(name, request_id)
            if delivery and mutating and not await self._claims.claim(delivery, services.clock.now()):
                return self._replay(name, request_id)
            if role < needed:
                denied = PermissionDenied(needed.name, role.name, name)
                async with services.db.transaction() as session:
                    await audit.append(session, at=services.clock.now(), actor=actor, command=name, args=args,
                                       outcome="denied", channel=channel, surface=surface,
                                       detail=f"needs {needed.name}, has {role.name}")
                return self._count(Outcome(Reply(Text(Icon("no_entry"), " ", denied.text)), name, "denied"))

            start = dict(actor=actor, role=role, channel=channel, surface=surface, request_id=request_id,
                         message_ref=message_ref)
            if not mutating:
                # Changes nothing: no write lock while the handler runs, however long it waits.
                ctx, reply = await self._read(call, start)
                record = _action(ctx, name, kind, args, reply, mutating=False, simulate=False)
                record.delivery = delivery
                if ctx.posts or any(recorder.wants(record) for recorder in services.recorders):
                    if not await self._record_afterwards(record):
                        return self._replay(name, request_id)  # another replica took it: nothing recorded
            else:
                async with services.db.reading() as session:
                    flags = await read_flags(session)
                simulate = flags.dry_run and dry_run_mode != "exempt"
                now = services.clock.now()

                def context(session) -> Context:
                    return Context(services=services, session=session, now=now, flags=flags, dry_run=simulate,
                                   **start)

                if simulate and dry_run_mode == "simulate":
                    # Run it for real, then roll every change back; only the records are kept.
                    async with services.db.simulation() as session:
                        ctx = context(session)
                        reply = await call(ctx)
                    record = _action(ctx, name, kind, args, reply, mutating=True, simulate=True)
                    await self._record_afterwards(record)
                else:
                    for attempt in range(CONFLICT_RETRIES + 1):
                        try:
                            async with services.db.transaction() as session:  # begins at its first statement
                                ctx = context(session)
                                reply = await call(ctx)
                                record = _action(ctx, name, kind, args, reply, mutating=True, simulate=simulate)
                                await self._record(session, record)
                            break
                        except Exception as exc:
                            # A deadlock or serialisation failure rolled the whole unit back: run it
                            # again (a fresh context; nothing of the first try was kept), a few times.
                            if attempt == CONFLICT_RETRIES or not is_transient_conflict(exc):
                                raise
                            log.info("%s hit a transient conflict (attempt %d); running it again", name,
                                     attempt + 1)
            posts = len(ctx.posts)  # all written to the outbox by now
            if posts:
                for notify in services.on_posts:
                    notify()
            return self._count(Outcome(reply, name, record.outcome, posts))
        except UsageError as exc:
            if usage and not exc.usage:
                exc.usage = usage
            return self._count(Outcome(usage_reply(exc), name, "usage"))
        except DatabaseUnavailable as exc:
            log.warning("database unavailable during %s: %s", name, exc.__cause__)
            self._recent.forget(delivery)  # nothing was changed: a retry of this delivery may run
            return self._count(Outcome(Reply(Text(Icon("warning"), " ", exc.text)), name, "failed"))
        except RevopsError as exc:
            await self._audit_failure(name, args, actor, channel, surface, mutating, str(exc))
            return self._count(Outcome(Reply(Text(Icon("warning"), " ", exc.text)), name, "failed"))
        except Exception:
            log.exception("command %s failed (request %s)", name, request_id)
            await self._audit_failure(name, args, actor, channel, surface, mutating, "internal error")
            return self._count(Outcome(
                Reply(Text(Icon("warning"), " ", Code(name),
                           f" failed unexpectedly; nothing was changed. (request id {request_id})")),
                name, "error",
            ))

    async def _read(self, call, start: dict[str, Any]) -> tuple[Context, Reply]:
        """The handler of an action that changes nothing, in a read unit (its `ctx.flags` is None:
        a handler that shows them calls `await ctx.current_flags()`)."""
        async with self.services.db.reading() as session:
            ctx = Context(services=self.services, session=session, now=self.services.clock.now(), flags=None,
                          **start)
            return ctx, await call(ctx)

    def _replay(self, name: str, request_id: str) -> Outcome:
        log.info("%s: a replayed delivery, not run again (request %s)", name, request_id)
        return self._count(Outcome(Reply(ALREADY_RECEIVED), name, "replay"))

    async def _record_afterwards(self, record: ActionRecord) -> bool:
        """What an action left to record, once its own unit of work is over: one short transaction,
        shared with the records of the actions finishing at the same time (group commit), and
        committed before the action answers. False when the record's delivery had been claimed
        already (a replay on another replica): nothing was written."""
        return await self._recording.submit(record)

    async def _record(self, session, record: ActionRecord) -> None:
        """The recording point, in the unit of work that writes: posts to the outbox, the audit
        record of a mutating action, and the recorders (the incident timeline)."""
        ctx, now = record.ctx, record.at
        for post in ctx.posts:
            if record.outcome == "dry_run":
                post.reply.tag = "dry run"
            await enqueue(session, channel=post.channel, reply=post.reply, at=now, kind=post.kind,
                          ref=post.ref, thread_ts=post.thread_ts, author=record.actor,
                          origin_channel=record.channel)
        if record.mutating:
            await audit.append(session, at=now, actor=record.actor, command=record.name,
                               args={**record.args, **ctx.audit_data}, outcome=record.outcome,
                               channel=record.channel, surface=ctx.surface, detail=ctx.audit_detail,
                               subject=ctx.audit_subject)
        for recorder in self.services.recorders:
            if recorder.wants(record):  # (one that could write nothing for it is not called)
                await recorder.write(session, record)

    async def _audit_failure(self, name, args, actor, channel, surface, mutating, detail) -> None:
        if not mutating:
            return
        try:
            async with self.services.db.transaction() as session:
                await audit.append(session, at=self.services.clock.now(), actor=actor, command=name, args=args,
                                   outcome="failed", channel=channel, surface=surface, detail=detail[:500])
        except Exception:
            log.exception("could not audit the failure of %s", name)

    @staticmethod
    def _count(outcome: Outcome) -> Outcome:
        REQUESTS.labels(command=outcome.name, outcome=outcome.outcome).inc()
        log.info("%s → %s", outcome.name, outcome.outcome)
        return outcome


class _Recording(GroupCommit[ActionRecord]):
    """The recording point of actions whose own unit of work did not write (reads, dry runs),
    group-committed: what the actions finishing at the same time leave to record is written in one
    transaction (bot/groupcommit.py). bench/ack_latency.py shows why: a `credits` look in an
    incident channel records a timeline line, and on SQLite (one writer at a time, every
    statement a trip to aiosqlite's thread, `synchronous=FULL`) 32 concurrent looks each in a
    transaction of its own queued to p50 133 ms, p99 196 ms; grouped, p50 43 ms."""

    name = "recording"

    def __init__(self, router: Router):
        super().__init__(router.services.db)
        self.router = router

    async def store_batch(self, transaction, records: list[ActionRecord]) -> list[bool]:
        async with transaction() as session:
            for record in records:
                await self._record(session, record)
        return [True] * len(records)

    async def store_one(self, record: ActionRecord) -> bool:
        try:
            async with self.db.transaction() as session:
                await self._record(session, record)
        except IntegrityError:
            if not record.delivery:
                raise
            return False  # its delivery was claimed already: a replay, nothing of it written
        return True

    async def _record(self, session, record: ActionRecord) -> None:
        record.ctx.session = session  # (the action's own unit of work is closed by now)
        if record.delivery:
            await deliveries.insert_claims(session, record.delivery, record.at)  # a replay fails here, first
        await self.router._record(session, record)


def _action(ctx: Context, name: str, kind: str, args: dict[str, Any], reply: Reply, *, mutating: bool,
            simulate: bool) -> ActionRecord:
    """What the recording point sees of an action that ran (a simulated one's reply says so)."""
    if simulate:
        reply.tag = "dry run"
    outcome = "dry_run" if simulate else (ctx.outcome or "ok")
    return ActionRecord(name, kind, ctx.actor, ctx.channel, args, outcome, mutating, reply.text, ctx.now, ctx)


def usage_reply(exc: UsageError) -> Reply:
    lines = []
    if exc.usage:
        lines = ["Usage: " + "\n       ".join(f"/revops {u}" for u in exc.usage.splitlines())]
    return Reply(Text(Icon("grey_question"), " ", exc.text), lines=lines)
