"""Incident lifecycle: declare → acknowledge → (mitigate) → resolve, and the
lookups every command shares. Handlers call these; they never write the
timeline themselves for commands (the router's recorder does, from
`ctx.timeline`), only for automation (jobs, alerts)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import Conflict, NotFound, UsageError
from ..models import ScheduledJob
from ..scheduler import stop_jobs, upsert_job
from ..settings import Settings
from ..text import Code, Text, User, clip
from . import links
from .models import ROLES, SEVERITIES, Incident, TimelineEntry

BOT = "revops"
INCIDENT_JOB_KINDS = ("revenue_update", "engineering_update", "update_reminder", "exec_summary", "escalation")
EXEC_SUMMARY_EVERY = timedelta(days=1)
_REF = re.compile(r"#?(\d{1,12})")


def parse_severity(raw: str | None) -> str:
    value = (raw or "").strip().upper()
    if value not in SEVERITIES:
        raise UsageError(Text("unknown severity ", Code((raw or '')[:20]), ": use P1, P2 or P3"))
    return value


def parse_ref(raw: str | None) -> int | None:
    if raw is None:
        return None
    match = _REF.fullmatch(raw.strip())
    if not match:
        raise UsageError(Text(Code(raw[:30]), " is not an incident number; write it as #12"))
    return int(match.group(1))


def split_ref(text: str | None) -> tuple[int | None, str]:
    """`#12 rest of text` → (12, "rest of text")."""
    text = (text or "").strip()
    match = re.match(r"#(\d{1,12})(?:\s+|$)", text)
    if match:
        return int(match.group(1)), text[match.end():].strip()
    return None, text


# The statements every status look and every recorded action runs, built once: building a
# statement and its cache key costs more than SQLite running it (bench/ack_latency.py).
_BY_ID = select(Incident).where(Incident.id == bindparam("incident_id"))
_OPEN_IN = select(Incident).where(Incident.open_channel == bindparam("channel"))
_BY_ID_LOCKED, _OPEN_IN_LOCKED = _BY_ID.with_for_update(), _OPEN_IN.with_for_update()
# The same over the tables, for reads (`session.rows`): a row, not an ORM object, at a third of the cost.
_INCIDENTS, _TIMELINE = Incident.__table__, TimelineEntry.__table__
_BY_ID_ROW = select(_INCIDENTS).where(_INCIDENTS.c.id == bindparam("incident_id"))
_OPEN_IN_ROW = select(_INCIDENTS).where(_INCIDENTS.c.open_channel == bindparam("channel"))
_LATEST_UPDATE = (select(_TIMELINE.c.text, _TIMELINE.c.data)
                  .where(_TIMELINE.c.incident_id == bindparam("incident_id"), _TIMELINE.c.kind == "update")
                  .order_by(_TIMELINE.c.at.desc(), _TIMELINE.c.id.desc()).limit(1))


def _latest_update_of_row(column):
    """The incident row's latest update (one column of it), as a scalar subquery of the row's SELECT."""
    return (select(column)
            .where(_TIMELINE.c.incident_id == _INCIDENTS.c.id, _TIMELINE.c.kind == "update")
            .order_by(_TIMELINE.c.at.desc(), _TIMELINE.c.id.desc()).limit(1).scalar_subquery())


_JOBS = ScheduledJob.__table__


def _next_due_of_row(kind: str):
    """When the incident row's active job of this kind is next due, as a scalar subquery."""
    return (select(func.min(_JOBS.c.due_at))
            .where(_JOBS.c.incident_id == _INCIDENTS.c.id, _JOBS.c.kind == kind, _JOBS.c.status == "active")
            .scalar_subquery().label(f"next_{kind}"))


# `incident status` reads the row, its latest update and when each of its jobs is next due in ONE
# statement: on SQLite every statement is a trip to the driver's thread, which costs more than the
# subqueries (bench/ack_latency.py).
_WITH_LATEST = (_INCIDENTS, _latest_update_of_row(_TIMELINE.c.text).label("latest_update_text"),
                _latest_update_of_row(_TIMELINE.c.data).label("latest_update_data"),
                *(_next_due_of_row(kind) for kind in INCIDENT_JOB_KINDS))
_BY_ID_WITH_LATEST = select(*_WITH_LATEST).where(_INCIDENTS.c.id == bindparam("incident_id"))
_OPEN_IN_WITH_LATEST = select(*_WITH_LATEST).where(_INCIDENTS.c.open_channel == bindparam("channel"))


_LOCK_ROW = select(Incident).where(Incident.id == bindparam("incident_id")).with_for_update()


async def lock_incident(session: AsyncSession, incident_id: int | None) -> Incident | None:
    """Lock the incident's row (PostgreSQL; SQLite's writers are serial): what a scheduled run of an
    incident's job takes before its job row, in the order every incident command takes them
    (the incident, then its jobs), so that `incident resolve` and a cadence post cannot deadlock.
    The row is loaded with its lock and returned: while the caller holds it, the job's
    `session.get` of the incident costs no trip (the session's identity map holds it weakly)."""
    if incident_id is not None and session.get_bind().dialect.name == "postgresql":
        return (await session.execute(_LOCK_ROW, {"incident_id": incident_id})).scalar_one_or_none()
    return None


async def open_incident_in(session: AsyncSession, channel: str | None) -> Incident | None:
    if not channel:
        return None
    return (await session.execute(_OPEN_IN, {"channel": channel})).scalar_one_or_none()


async def open_incidents(session: AsyncSession) -> list[Incident]:
    return list((await session.execute(
        select(Incident).where(Incident.status != "resolved").order_by(Incident.id)
    )).scalars().all())


async def find_incident(session: AsyncSession, channel: str | None, ref: int | None, *,
                        lock: bool = False, with_latest_update: bool = False) -> Incident | Row:
    """The incident `#ref`, or the open incident of this channel; NotFound says which. Locked, it is
    the ORM object, to change; not locked, a read-only row with the same attributes (and, asked
    `with_latest_update`, `latest_update_text` / `latest_update_data` for `row_latest_update`)."""
    by_id, open_in = (_BY_ID_WITH_LATEST, _OPEN_IN_WITH_LATEST) if with_latest_update else (_BY_ID_ROW, _OPEN_IN_ROW)
    if ref is not None:
        params = {"incident_id": ref}
        incident = ((await session.execute(_BY_ID_LOCKED, params)).scalar_one_or_none() if lock
                    else (await session.rows(by_id, params)).one_or_none())
        if incident is None:
            raise NotFound(Text(f"There is no incident #{ref}. ", Code("/revops incident list"), " shows them."))
        return incident
    params = {"channel": channel or ""}
    incident = ((await session.execute(_OPEN_IN_LOCKED, params)).scalar_one_or_none() if lock
                else (await session.rows(open_in, params)).one_or_none())
    if incident is None:
        raise NotFound(Text("There is no open incident in this channel. Declare one with ",
                            Code("/revops incident declare <P1|P2|P3> <stage> <summary…>"), ", or name one with #ID (",
                            Code("/revops incident list"), ")."))
    return incident


class AlreadyResolved(Conflict):
    """The incident is resolved, so it cannot be `what` (the command says by whom and when)."""

    def __init__(self, incident: Incident, what: str):
        super().__init__(f"Incident #{incident.id} was already resolved; it cannot be {what}.")
        self.incident = incident
        self.what = what


class AlreadyAcknowledged(Conflict):
    """The incident has a commander already (the command says who and when)."""

    def __init__(self, incident: Incident):
        super().__init__(f"Incident #{incident.id} was already acknowledged.")
        self.incident = incident


def assign_role(incident: Incident, role: str, user: str) -> str | None:
    """`user` holds `role` from now on; returns who held it before (None: nobody). The commander
    set here does not acknowledge the incident: escalation stops at acknowledgement."""
    require_open(incident, "given roles")
    if role not in ROLES:
        raise ValueError(role)
    before = getattr(incident, role)
    if before == user:
        raise Conflict(Text(User(user, ping=False), f" is already the {ROLES[role]} of incident #{incident.id}."))
    setattr(incident, role, user)
    return before


def require_open(incident: Incident, what: str) -> None:
    if incident.status == "resolved":
        raise AlreadyResolved(incident, what)


async def declare(session: AsyncSession, settings: Settings, *, channel: str, actor: str, severity: str,
                  stage: str, summary: str, figures: dict[str, float], now: datetime,
                  detected_at: datetime | None = None, alert_id: int | None = None) -> Incident:
    existing = await open_incident_in(session, channel)
    if existing is not None:
        raise Conflict(Text(f"Incident #{existing.id} ({existing.severity}, {existing.stage}: ",
                            clip(existing.summary, 300), ") is already open in this channel. Drive it with ",
                            Code("/revops incident …"), ", resolve it first, or declare the new one in another channel."))
    incident = Incident(
        channel=channel, open_channel=channel, severity=severity, stage=stage[:100], summary=summary,
        status="declared", declared_by=actor, detected_at=detected_at or now, declared_at=now,
        impact=figures or None, escalation_level=0, alert_id=alert_id,
    )
    try:
        async with session.begin_nested():
            session.add(incident)
            await session.flush()
    except IntegrityError:
        raise Conflict(Text("Another incident was declared in this channel at the same moment; ",
                            Code("/revops incident status"), " shows it.")) from None
    await schedule_jobs(session, settings, incident, now)
    return incident


async def schedule_jobs(session: AsyncSession, settings: Settings, incident: Incident, now: datetime,
                        restart: bool = True) -> None:
    """(Re)create the incident's cadence jobs for its severity; stop those it no longer has."""
    clocks = settings.cfg.severity[incident.severity]
    cadences: dict[str, timedelta | None] = {
        "revenue_update": clocks.revenue_update,
        "engineering_update": clocks.engineering_update,
        "update_reminder": clocks.revenue_update,
        "exec_summary": EXEC_SUMMARY_EVERY if incident.severity in ("P1", "P2") else None,
    }
    for kind, every in cadences.items():
        key = f"incident:{incident.id}:{kind}"
        if every is None or every.total_seconds() <= 0:
            await stop_jobs(session, key=key)
            continue
        await upsert_job(session, key=key, kind=kind, due_at=now + every, every=every, incident_id=incident.id)
    await schedule_escalation(session, settings, incident)


def escalation_levels(settings: Settings) -> list[tuple[str, Any]]:
    return sorted(settings.cfg.escalation.items(), key=lambda item: (item[1].after, item[0]))


async def schedule_escalation(session: AsyncSession, settings: Settings, incident: Incident) -> None:
    key = f"incident:{incident.id}:escalation"
    levels = escalation_levels(settings)
    if incident.status != "declared" or incident.severity == "P3" or incident.escalation_level >= len(levels):
        await stop_jobs(session, key=key)
        return
    _, level = levels[incident.escalation_level]
    await upsert_job(session, key=key, kind="escalation", due_at=incident.detected_at + level.after,
                     incident_id=incident.id, data={"target": "incident", "id": incident.id})


async def acknowledge(session: AsyncSession, incident: Incident, *, actor: str, now: datetime) -> None:
    require_open(incident, "acknowledged")
    if incident.acknowledged_at is not None:
        raise AlreadyAcknowledged(incident)
    incident.acknowledged_at = now
    incident.commander = actor
    if incident.status == "declared":
        incident.status = "acknowledged"
    await stop_jobs(session, key=f"incident:{incident.id}:escalation")


async def resolve(session: AsyncSession, incident: Incident, *, actor: str, root_cause: str,
                  now: datetime) -> None:
    require_open(incident, "resolved again")
    incident.status = "resolved"
    incident.resolved_at = now
    incident.resolved_by = actor
    incident.root_cause = root_cause
    incident.open_channel = None
    if incident.acknowledged_at is None:
        # resolving is the strongest acknowledgement there is
        incident.acknowledged_at = now
        incident.commander = incident.commander or actor
    await stop_jobs(session, incident_id=incident.id)


# Core statements on the table, not ORM inserts: every action in an incident's channel lands here.
_ENTRIES = TimelineEntry.__table__
_INSERT_ENTRY = insert(_ENTRIES)
_ENTRY_FIELDS = ("at", "kind", "actor", "text", "data")
# The entry lands on the channel's open incident, if there is one, in the same statement.
_INSERT_ENTRY_IN_CHANNEL = insert(_ENTRIES).from_select(
    ["incident_id", *_ENTRY_FIELDS],
    select(Incident.__table__.c.id, *(bindparam(name, type_=_ENTRIES.c[name].type) for name in _ENTRY_FIELDS))
    .where(Incident.__table__.c.open_channel == bindparam("channel")),
)


MAX_ENTRY_CHARS = 100_000  # a timeline entry is stored whole up to this (the page shows it whole)


def _stored(text: str) -> str:
    """An entry's text as stored: plain data, whole unless absurdly long (then said so)."""
    text = str.__str__(str(text))
    if len(text) <= MAX_ENTRY_CHARS:
        return text
    return text[:MAX_ENTRY_CHARS] + f"… (cut: {len(text):,} characters)"


async def write_entry(session: AsyncSession, incident_id: int, *, at: datetime, kind: str, actor: str, text: str,
                      data: dict[str, Any] | None = None) -> None:
    await session.write(_INSERT_ENTRY, {
        "incident_id": incident_id, "at": at, "kind": kind, "actor": actor, "text": _stored(text), "data": data})


async def write_entries_in(session: AsyncSession, channel: str | None, *, at: datetime, actor: str,
                           entries: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    """`(kind, text, data)` entries on the open incident of `channel`; nothing when it has none."""
    if not channel or not entries:
        return
    await session.write(_INSERT_ENTRY_IN_CHANNEL, [
        {"channel": channel, "at": at, "kind": kind, "actor": actor, "text": _stored(text), "data": data}
        for kind, text, data in entries])


async def timeline_count(session: AsyncSession, incident_id: int) -> int:
    return (await session.execute(select(func.count()).select_from(TimelineEntry)
                                  .where(TimelineEntry.incident_id == incident_id))).scalar_one()


async def timeline_of(session: AsyncSession, incident_id: int, limit: int | None = None) -> list[TimelineEntry]:
    stmt = select(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
    if limit:
        stmt = stmt.order_by(TimelineEntry.at.desc(), TimelineEntry.id.desc()).limit(limit)
        return list(reversed((await session.execute(stmt)).scalars().all()))
    stmt = stmt.order_by(TimelineEntry.at, TimelineEntry.id)
    return list((await session.execute(stmt)).scalars().all())


def _update_text(text: str | None, data: dict | None) -> str | None:
    return (data or {}).get("text", text) if text is not None else None


async def latest_update(session: AsyncSession, incident_id: int) -> str | None:
    entry = (await session.rows(_LATEST_UPDATE, {"incident_id": incident_id})).one_or_none()
    return _update_text(entry.text, entry.data) if entry else None


def row_latest_update(row: Row) -> str | None:
    """The latest update of a row read `with_latest_update` (the same text `latest_update` gives)."""
    return _update_text(row.latest_update_text, row.latest_update_data)


def row_next_due(row: Row) -> list[tuple[str, datetime]]:
    """(kind, due_at) of the active jobs of a row read `with_latest_update`, soonest first."""
    due = [(kind, getattr(row, f"next_{kind}")) for kind in INCIDENT_JOB_KINDS]
    return sorted(((kind, at) for kind, at in due if at is not None), key=lambda job: job[1])


LESSON_PREFIXES = ("lesson:", "lessons:", "learned:", "lesson learned:")


def lesson_text(note: str) -> str | None:
    low = note.lower()
    for prefix in LESSON_PREFIXES:
        if low.startswith(prefix):
            return note[len(prefix):].strip()
    return None


def report_parts(entries: list[TimelineEntry]) -> dict[str, list[str]]:
    lessons, actions, notes = [], [], []
    for e in entries:
        text = (e.data or {}).get("text")
        if not text:
            continue
        if e.kind == "note":
            lesson = lesson_text(text)
            (lessons if lesson is not None else notes).append(lesson if lesson is not None else text)
        elif e.kind == "action":
            actions.append(text)
    return {"lessons": lessons, "actions": actions, "notes": notes}


def page_path(incident_id: int | None = None) -> str:
    return "/incidents" if incident_id is None else f"/incidents/{incident_id}"


def page_link(settings: Settings, incident_id: int, now: datetime) -> str | None:
    return links.signed_url(settings, page_path(incident_id), now)
