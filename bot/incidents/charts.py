"""The incident pages' pictures, as data: where each mark of one incident's timeline falls
against its severity's targets, and MTTA / MTTR per severity over the last 90 days.

Everything here is numbers (SVG user units of a fixed viewBox) and plain strings; the page
templates draw them as inline SVG, and jinja2's autoescape makes every string text there.
MTTA and MTTR are measured from detection, like the severity clocks and `incident stats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..durations import format_duration
from ..settings import Settings
from .models import Incident, TimelineEntry

WINDOW = timedelta(days=90)
# Nice tick steps for a time axis (seconds); the first that gives at most MAX_TICKS ticks wins.
STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 2592000)
MAX_TICKS = 6
# A target further out than this many times the incident's own span is named, not drawn.
TARGET_REACH = 3
TEXT_CHARS = 200  # of an update's text in its tick's tooltip
TICKS = ("update", "pin")  # the timeline entries drawn as ticks

# The timeline's viewBox and rows (top to bottom: target labels, update ticks, the track,
# milestone labels, the time axis).
WIDTH, LEFT, RIGHT = 800, 20, 780
TARGET_ROWS = (16, 32)
TRACK_Y, TRACK_H = 62, 16
LABEL_ROWS = (94, 109, 124, 139)  # milestone labels, staggered when close
LABEL_GAP = 110  # closer than this (in units) a label goes one row down
AXIS_Y = 152  # the time axis' line; its labels sit under it
HEIGHT = 174
EDGE = 70  # a label this close to an end is anchored on that end, not centred

# The bar chart's viewBox and rows; a bar OVER times its target or longer is cut at the right end.
BAR_LEFT, BAR_RIGHT, BAR_H, ROW_H, PANEL_TOP, OVER = 40, 560, 16, 26, 24, 1.5


@dataclass(frozen=True)
class ResponseTimes:
    """One severity's response over the window: counts and the means (None: nothing to average)."""

    severity: str
    incidents: int
    acknowledged: int
    resolved: int
    open: int
    mtta: timedelta | None
    mttr: timedelta | None
    ack_target: timedelta
    resolve_target: timedelta


def _mean(values: list[timedelta]) -> timedelta | None:
    return sum(values, timedelta()) / len(values) if values else None


def response_times_of(rows: Iterable[Any], settings: Settings) -> list[ResponseTimes]:
    """MTTA / MTTR per configured severity from incidents' (severity, detected_at,
    acknowledged_at, resolved_at); an open incident counts in MTTA once acknowledged, never in MTTR."""
    rows = list(rows)
    out = []
    for severity, clocks in settings.cfg.severity.items():
        mine = [r for r in rows if r.severity == severity]
        acks = [r.acknowledged_at - r.detected_at for r in mine if r.acknowledged_at]
        fixes = [r.resolved_at - r.detected_at for r in mine if r.resolved_at]
        out.append(ResponseTimes(severity, len(mine), len(acks), len(fixes), len(mine) - len(fixes),
                                 _mean(acks), _mean(fixes), clocks.ack, clocks.resolve))
    return out


async def response_times(session: AsyncSession, settings: Settings, now: datetime,
                         window: timedelta = WINDOW) -> list[ResponseTimes]:
    """MTTA / MTTR per severity of the incidents detected in the last `window`."""
    stmt = (select(Incident.severity, Incident.detected_at, Incident.acknowledged_at, Incident.resolved_at)
            .where(Incident.detected_at >= now - window, Incident.detected_at <= now))
    return response_times_of((await session.execute(stmt)).all(), settings)


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def _step(span: float) -> int:
    return next((s for s in STEPS if span / s <= MAX_TICKS), STEPS[-1])


def _dur(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds)))


def _hhmm(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%H:%M")


def _anchor(x: float) -> str:
    """How a label at `x` is anchored so that it stays inside the picture."""
    return "start" if x < LEFT + EDGE else "end" if x > RIGHT - EDGE else "middle"


def timeline_chart(incident: Incident, entries: list[TimelineEntry], settings: Settings,
                   now: datetime) -> dict[str, Any]:
    """The incident from detection to resolution (or to now while open) on a time axis, against
    its acknowledge and resolve targets: phases as coloured spans, milestones as marks, updates as ticks."""
    clocks = settings.cfg.severity[incident.severity]
    start = incident.detected_at
    end = incident.resolved_at or now
    # The axis spans the incident, the target an open incident is working toward, and the other
    # targets within TARGET_REACH of that (a 24h target would squash a 30-minute incident).
    span = max(_seconds(end - start), 60.0)
    if incident.resolved_at is None:
        span = max(span, _seconds(clocks.ack if incident.acknowledged_at is None else clocks.resolve))
    for target in (clocks.ack, clocks.resolve):
        if _seconds(target) <= TARGET_REACH * span:
            span = max(span, _seconds(target))
    span *= 1.04  # room for the last mark
    targets_off = []

    def x(at: datetime) -> float:
        offset = min(max(_seconds(at - start), 0.0), span)
        return round(LEFT + (RIGHT - LEFT) * offset / span, 1)

    targets = []
    for key, name, target, done_at in (("ack", "acknowledge", clocks.ack, incident.acknowledged_at),
                                       ("resolve", "resolve", clocks.resolve, incident.resolved_at)):
        met = (done_at or now) - start <= target
        if _seconds(target) <= span:
            tx = x(start + target)
            # the label reads leftwards from its line, or rightwards when the line is near the start
            right = tx < LEFT + 3 * EDGE
            targets.append({"id": f"target-{key}", "key": key, "x": tx, "met": met,
                            "label_y": TARGET_ROWS[len(targets)], "label_x": tx + 4 if right else tx - 4,
                            "anchor": "start" if right else "end",
                            "label": f"{name} target {format_duration(target)}"})
        else:
            targets_off.append(f"{name} target {format_duration(target)} is past the right edge")

    step = _step(span)
    ticks = [{"x": x(start + timedelta(seconds=s)), "anchor": "start" if s == 0 else "middle",
              "label": f"{_hhmm(start)} UTC" if s == 0 else f"+{_dur(s)}"}
             for s in range(0, int(span) + 1, step)]

    # (key, the phase it begins, label, at, actor): the incident's own milestones, in time order
    stones = []
    if incident.declared_at - start >= timedelta(minutes=1):  # an alert came first
        stones.append(("detect", "detected", "detected", start, None))
    stones.append(("declare", "declared", "declared", incident.declared_at, incident.declared_by))
    if incident.acknowledged_at:
        stones.append(("ack", "acknowledged", "acknowledged", incident.acknowledged_at, incident.commander))
    if incident.mitigated_at:
        stones.append(("mitigate", "mitigated", "mitigated", incident.mitigated_at, None))
    if incident.resolved_at:
        stones.append(("resolve", "resolved", "resolved", incident.resolved_at, incident.resolved_by))
    stones.sort(key=lambda s: s[3])

    phases = []
    bounds = [(at, status) for _, status, _, at, _ in stones]
    bounds[0] = (start, bounds[0][1])  # the clocks start at detection
    for i, (at, status) in enumerate(bounds):
        if status == "resolved":
            break
        until = bounds[i + 1][0] if i + 1 < len(bounds) else end
        x0, x1 = x(at), x(until)
        phases.append({"id": f"phase-{status}", "status": status, "x": x0, "w": max(round(x1 - x0, 1), 1.0),
                       "label": f"{status} {_hhmm(at)}–{_hhmm(until)} ({_dur(_seconds(until - at))})"})

    marks, last_x = [], {}
    for key, _, label, at, actor in stones:
        mx = x(at)
        row = next((r for r in range(len(LABEL_ROWS)) if mx - last_x.get(r, -LABEL_GAP) >= LABEL_GAP),
                   len(LABEL_ROWS) - 1)
        last_x[row] = mx
        late = (key == "ack" and at - start > clocks.ack) or (key == "resolve" and at - start > clocks.resolve)
        marks.append({"id": f"mark-{key}", "key": key, "x": mx, "label_y": LABEL_ROWS[row], "late": late,
                      "anchor": _anchor(mx),
                      "label": f"{label} {_hhmm(at)}", "actor": actor,
                      "title": f"{label[0].upper()}{label[1:]} at {_hhmm(at)} UTC, "
                               f"{_dur(_seconds(at - start))} after detection"})

    # status updates, and messages pinned to the timeline (📌, at the message's own time)
    updates = [{"x": x(e.at), "at": _hhmm(e.at), "actor": e.actor, "kind": e.kind,
                "text": (e.data or {}).get("text") or e.text}
               for e in entries if e.kind in TICKS]
    for u in updates:
        if len(u["text"]) > TEXT_CHARS:
            u["text"] = u["text"][:TEXT_CHARS - 1] + "…"

    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": RIGHT, "track_y": TRACK_Y,
            "track_h": TRACK_H, "axis_y": AXIS_Y, "open": incident.resolved_at is None, "now_x": x(now),
            "now": _hhmm(now), "now_anchor": _anchor(x(now)),
            "ticks": ticks, "targets": targets, "targets_off": targets_off, "phases": phases,
            "marks": marks, "updates": updates}


def response_chart(times: list[ResponseTimes], window: timedelta = WINDOW) -> dict[str, Any]:
    """Two panels of horizontal bars, MTTA then MTTR, one bar per severity. Each bar is drawn
    against its own severity's target, which lines up across the rows (P1's minutes and P3's hours
    read alike): a bar reaching the dashed line took as long as the target; past OVER it is cut."""
    target_at = round((BAR_RIGHT - BAR_LEFT) / OVER, 1)
    panels, y = [], 0
    for key, name, mean_of, target_of, count_of, none in (
            ("mtta", "Mean time to acknowledge", lambda t: t.mtta, lambda t: t.ack_target,
             lambda t: t.acknowledged, "none acknowledged"),
            ("mttr", "Mean time to resolve", lambda t: t.mttr, lambda t: t.resolve_target,
             lambda t: t.resolved, "none resolved")):
        bars = []
        title_y, y = y + 16, y + PANEL_TOP
        for t in times:
            mean, target, count = mean_of(t), target_of(t), count_of(t)
            ratio = _seconds(mean) / _seconds(target) if mean is not None else 0.0
            w = round(min(ratio, OVER) * target_at, 1)
            if mean is not None:
                value = (f"{format_duration(mean)} over {count} incident{'s' if count != 1 else ''}, "
                         f"target {format_duration(target)}")
            else:
                value = f"{none}, {t.open} open" if t.incidents else "no incidents"
            bars.append({"id": f"bar-{key}-{t.severity}", "severity": t.severity, "y": y, "w": max(w, 1.0),
                         "empty": mean is None, "late": mean is not None and mean > target,
                         "cut": ratio > OVER, "value": value, "value_x": BAR_LEFT + max(w, target_at) + 8,
                         "title": f"{t.severity} {name.lower()}: {value}"})
            y += ROW_H
        panels.append({"key": key, "name": name, "title_y": title_y, "bars": bars})
        y += 8
    return {"width": WIDTH, "height": y + 4, "left": BAR_LEFT, "right": BAR_RIGHT, "bar_h": BAR_H,
            "target_x": BAR_LEFT + target_at, "over": OVER, "panels": panels, "days": window.days,
            "open": sum(t.open for t in times), "incidents": sum(t.incidents for t in times)}
