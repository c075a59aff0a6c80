"""Finance lineage: the `[[invariants]]` of revops.toml checked on every applied Stripe event.

`check_applied(session, events, now=, policy=)` runs inside store_and_apply's transaction (no
network): each processed event of an invariant's types is checked once (a `lineage_checks` row
keyed by event and invariant, so a replay checks nothing twice); a violation is counted
(`revops_lineage_checks{outcome="violated"}`) and posted to the incident channel at most once
per invariant and UTC hour (a `lineage_posts` row claims the hour; the outbox holds the post in
panic mode). `summary(session, invariants, since=)` is what `lineage` shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.metrics import LINEAGE_CHECKS
from bot.outbox import post_automated
from bot.reply import Reply
from bot.text import Code, Em, Icon, Text, clip

from .models import LineageCheck, LineagePost
from .sqlutil import insert_ignore

_MISSING = object()


def resolve(event: dict[str, Any], path: str) -> Any:
    """The value at a dotted path: into the event when it starts with `data.`, else into its object."""
    parts = path.split(".")
    if parts[0] == "data":
        node: Any = event
    else:
        node = (event.get("data") or {}).get("object") if isinstance(event.get("data"), dict) else None
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value is _MISSING:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _close(found: float, expected: float, tolerance: float) -> bool:
    return abs(found - expected) <= tolerance + 1e-9 * max(1.0, abs(expected))


def _shown(value: Any) -> str:
    return "missing" if value is _MISSING else repr(value)[:80]


def violation(invariant, event: dict[str, Any]) -> str | None:
    """Why the event breaks the invariant (a plain sentence), or None when it holds."""
    value = resolve(event, invariant.field)
    name, rule = invariant.field, invariant.rule
    if rule == "present":
        here = value is not _MISSING and value not in (None, "")
        if here == invariant.present:
            return None
        return f"{name} is {_shown(value)}, expected it {'present' if invariant.present else 'absent'}"
    if rule == "equals":
        expected = invariant.equals
        if isinstance(expected, (int, float)) and not isinstance(expected, bool):
            number = _number(value)
            if number is not None and _close(number, float(expected), invariant.tolerance):
                return None
        elif isinstance(expected, bool):
            if value is expected or str(value).lower() == str(expected).lower():
                return None
        elif value is not _MISSING and str(value) == expected:
            return None
        shown = f"{expected:g}" if isinstance(expected, float) else repr(expected)
        return f"{name} is {_shown(value)}, expected {shown}" + (
            f" (± {invariant.tolerance:g})" if invariant.tolerance else "")
    number = _number(value)
    if rule == "between":
        low, high = invariant.between
        if number is not None and low - invariant.tolerance <= number <= high + invariant.tolerance:
            return None
        return f"{name} is {_shown(value)}, expected between {low:g} and {high:g}"
    other = resolve(event, invariant.ratio_of)
    base = _number(other)
    if number is not None and base is not None and _close(number, invariant.factor * base, invariant.tolerance):
        return None
    expected = f"{invariant.factor:g} × {invariant.ratio_of}"
    if base is not None:
        expected += f" = {invariant.factor * base:g}"
    return f"{name} is {_shown(value)}, expected {expected}" + (
        "" if base is not None else f" ({invariant.ratio_of} is {_shown(other)})")


def applies(invariant, event: dict[str, Any]) -> bool:
    return str(event.get("type")) in invariant.events


async def check_applied(session: AsyncSession, events: Iterable[dict[str, Any]], *, now: datetime, policy) -> int:
    """Check the applied events against `policy.invariants`; the number of new violations."""
    violations = 0
    for event in events:
        for invariant in policy.invariants:
            if not applies(invariant, event):
                continue
            problem = violation(invariant, event)
            fresh = await insert_ignore(session, LineageCheck, dict(
                event_id=str(event["id"]), invariant=invariant.name, ok=problem is None, detail=problem, at=now,
            ), ["event_id", "invariant"])
            if not fresh:
                continue
            LINEAGE_CHECKS.labels(invariant.name, "passed" if problem is None else "violated").inc()
            if problem is None:
                continue
            violations += 1
            hour = now.replace(minute=0, second=0, microsecond=0)
            if await insert_ignore(session, LineagePost, dict(invariant=invariant.name, hour=hour,
                                                               event_id=str(event["id"])), ["invariant", "hour"]):
                await post_automated(session, channel=policy.lineage_channel, at=now,
                                     ref=f"lineage:{hour:%Y%m%dT%H}:{invariant.name[:60]}",
                                     reply=violation_post(invariant.name, str(event["id"]), str(event["type"]),
                                                          problem))
    return violations


def violation_post(name: str, event_id: str, event_type: str, problem: str) -> Reply:
    return Reply(
        Text(Icon("rotating_light"), " ", Em(f"Finance lineage: invariant {name} violated")),
        lines=[Text(Code(event_type), " ", Code(event_id), ": ", clip(problem, 300)),
               Text("Follow it with ", Code(f"/revops trace {event_id}"), "; ", Code("/revops lineage"),
                    " shows every invariant (further violations this hour are counted, not posted).")],
    )


@dataclass
class InvariantSummary:
    name: str
    events: list[str]
    checked: int
    passed: int
    violated: int
    last_event_id: str | None = None
    last_at: datetime | None = None
    last_detail: str | None = None
    last_seen: datetime | None = None  # the newest check ever, for a silent invariant


async def summary(session: AsyncSession, invariants, *, since: datetime) -> list[InvariantSummary]:
    """Per configured invariant: checks since `since`, and its newest violation in that window."""
    table = LineageCheck.__table__
    counts = {row.invariant: row for row in (await session.execute(
        select(table.c.invariant, func.count().label("checked"),
               func.sum(case((table.c.ok.is_(False), 1), else_=0)).label("violated"))
        .where(table.c.at >= since).group_by(table.c.invariant))).all()}
    found = []
    for invariant in invariants:
        row = counts.get(invariant.name)
        checked, violated = (int(row.checked), int(row.violated or 0)) if row else (0, 0)
        item = InvariantSummary(invariant.name, list(invariant.events), checked, checked - violated, violated)
        if violated:
            last = (await session.execute(
                select(LineageCheck).where(table.c.invariant == invariant.name, table.c.ok.is_(False),
                                           table.c.at >= since)
                .order_by(table.c.at.desc(), table.c.event_id.desc()).limit(1))).scalar_one()
            item.last_event_id, item.last_at, item.last_detail = last.event_id, last.at, last.detail
        if not checked:
            item.last_seen = (await session.execute(
                select(func.max(table.c.at)).where(table.c.invariant == invariant.name))).scalar()
        found.append(item)
    return found
