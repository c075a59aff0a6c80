"""What templates see: an incident, its clocks, impact and timeline as plain values; and the
alert card (the automated post of `POST /alerts`, replaced in place by its buttons)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ..durations import format_duration
from ..flags import read_flags
from ..outbox import enqueue, post_automated
from ..reply import Button, Reply
from ..settings import Settings
from ..templating import render_reply
from .charts import ResponseTimes, response_chart, timeline_chart
from .impact import Impact
from .models import ROLES, Alert, Incident, TimelineEntry, role_holders

TIME = "%Y-%m-%d %H:%M UTC"


def fmt_time(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).strftime(TIME) if value else None


def fmt_clock(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).strftime("%H:%M:%S") if value else None


def dur(delta: timedelta | None) -> str | None:
    return format_duration(delta) if delta is not None else None


def clock_view(start: datetime, target: timedelta, done_at: datetime | None, now: datetime) -> dict[str, Any]:
    """One severity clock: target, elapsed, and whether it was (or is being) met."""
    end = done_at or now
    elapsed = end - start
    return {
        "target": dur(target),
        "due_at": fmt_time(start + target),
        "done": done_at is not None,
        "elapsed": dur(elapsed),
        "met": elapsed <= target,
        "remaining": dur(target - elapsed) if elapsed <= target else None,
        "overdue_by": dur(elapsed - target) if elapsed > target else None,
    }


def incident_view(incident: Incident, settings: Settings, now: datetime) -> dict[str, Any]:
    clocks = settings.cfg.severity[incident.severity]
    end = incident.resolved_at or now
    duration = end - incident.detected_at
    impact = Impact.from_figures(incident.impact)
    return {
        "id": incident.id,
        "number": f"#{incident.id}",
        "severity": incident.severity,
        "stage": incident.stage,
        "summary": incident.summary,
        "status": incident.status,
        "open": incident.status != "resolved",
        "channel": incident.channel,
        "commander": incident.commander,
        "comms": getattr(incident, "comms", None),
        "scribe": getattr(incident, "scribe", None),
        # [{"role": "comms", "name": "communications lead", "user": "U…"}] for each role held
        "roles": [{"role": role, "name": ROLES[role], "user": user} for role, user in role_holders(incident)],
        "declared_by": incident.declared_by,
        "resolved_by": incident.resolved_by,
        "root_cause": incident.root_cause,
        "detected_at": fmt_time(incident.detected_at),
        "declared_at": fmt_time(incident.declared_at),
        "acknowledged_at": fmt_time(incident.acknowledged_at),
        "mitigated_at": fmt_time(incident.mitigated_at),
        "resolved_at": fmt_time(incident.resolved_at),
        "duration": dur(duration),
        "ack": clock_view(incident.detected_at, clocks.ack, incident.acknowledged_at, now),
        "resolve": clock_view(incident.detected_at, clocks.resolve, incident.resolved_at, now),
        "eta": fmt_time(incident.detected_at + clocks.resolve),
        "revenue_every": dur(clocks.revenue_update),
        "engineering_every": dur(clocks.engineering_update),
        "impact": impact.view(duration) if impact else None,
        "impact_partial": {k: v for k, v in (incident.impact or {}).items() if v is not None},
        "escalation_level": incident.escalation_level,
    }


def timeline_view(entries: list[TimelineEntry]) -> list[dict[str, Any]]:
    return [
        {"at": fmt_time(e.at), "time": fmt_clock(e.at), "kind": e.kind, "actor": e.actor, "text": e.text,
         "permalink": getattr(e, "source_permalink", None)}  # a pinned Slack message's (bot/incidents/pins.py)
        for e in entries
    ]


def alert_card(settings: Settings, alert: Alert, state: str, *, actor: str | None = None,
               incident: Incident | None = None, now: datetime) -> Reply:
    """The alert card in `state` (open | acknowledged | declared), with the buttons that state
    still offers: Acknowledge and Declare incident while open, Declare incident once acknowledged."""
    direction = "below" if alert.current < alert.baseline_mean else "above"
    reply = render_reply(settings, "alert_card.md", alert=alert, state=state, actor=actor, now=fmt_time(now),
                         repeats=alert.repeats or 0,
                         ack_target=dur(settings.cfg.severity[alert.severity].ack),
                         deviation=f"{alert.sigma:.1f}σ {direction}",
                         incident={"number": f"#{incident.id}", "id": incident.id} if incident else None)
    if state == "open":
        reply.buttons.append(Button("Acknowledge", "incident.alert_ack", str(alert.id), style="primary"))
    if state in ("open", "acknowledged"):
        reply.buttons.append(Button("Declare incident", "incident.alert_declare", str(alert.id), style="danger",
                                    confirm=f"Declare a {alert.severity} incident for {alert.stage}?"))
    return reply


async def announce_alert(session: AsyncSession, settings: Settings, alert: Alert, *, repeated: bool = False) -> None:
    """Post the card of a P1/P2 alert to the alerts channel (held, not sent, in panic mode); a
    repeat updates the card already posted, in its current state, with the count."""
    if alert.status == "recorded":
        return  # P3: recorded, not posted
    if repeated:
        card = alert_card(settings, alert, alert.status, actor=alert.acknowledged_by, now=alert.last_seen_at)
        card.private = False
        await enqueue(session, channel=settings.cfg.slack.alerts_channel, reply=card, at=alert.last_seen_at,
                      kind="update", ref=f"alert:{alert.id}", held=(await read_flags(session)).panic)
        return
    await post_automated(session, channel=settings.cfg.slack.alerts_channel,
                         reply=alert_card(settings, alert, "open", now=alert.received_at), at=alert.received_at,
                         ref=f"alert:{alert.id}")


def sample_incident(now: datetime) -> Incident:
    start = now - timedelta(minutes=42)
    return Incident(
        id=7, channel="C0INCIDENT", open_channel=None, severity="P1", stage="checkout",
        summary="checkout conversion down", status="resolved", declared_by="U0RESPONDER",
        commander="U0RESPONDER", comms="U0COMMS", scribe=None, detected_at=start, declared_at=start,
        acknowledged_at=start + timedelta(minutes=4), mitigated_at=start + timedelta(minutes=30),
        resolved_at=now, resolved_by="U0RESPONDER", root_cause="a payment provider timeout",
        impact={"baseline": 0.032, "current": 0.021, "traffic": 1200.0, "aov": 80.0},
        last_human_update_at=start + timedelta(minutes=20), escalation_level=1, alert_id=None,
    )


def sample_contexts(settings: Settings) -> dict[str, dict[str, Any]]:
    """Sample data for every template (used by render_check)."""
    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    incident = incident_view(sample_incident(now), settings, now)
    open_incident = dict(incident, status="acknowledged", open=True, resolved_at=None, root_cause=None)
    timeline = [
        {"at": fmt_time(now), "time": fmt_clock(now), "kind": "declare", "actor": "U0RESPONDER",
         "text": "Declared P1 on checkout", "permalink": None},
    ]
    link = "https://revops.example.com/incidents/7?exp=1&sig=x"
    alert = SimpleNamespace(id=3, stage="checkout", metric="conversion_rate", baseline_mean=0.032,
                            baseline_std=0.002, current=0.021, traffic_per_hour=1200.0, aov=80.0,
                            sigma=5.5, severity="P1", status="open", acknowledged_by=None, repeats=0,
                            incident_id=None)
    base = {"incident": open_incident, "now": fmt_time(now), "link": link}
    return {
        "initial_p1.md": base,
        "initial_p2.md": base,
        "initial_p3.md": base,
        "revenue_update.md": dict(base, sequence=2, catch_up=0, latest_update="mitigation in progress"),
        "engineering_update.md": dict(base, sequence=1, catch_up=3, latest_update=None, recent=timeline),
        "executive_summary.md": dict(base, sequence=1, catch_up=0, latest_update=None),
        "update_reminder.md": dict(base, window="30m", since="35m", snoozes=["30m", "1h"]),
        "escalation.md": dict(base, levels=[{"name": "L2", "after": "15m", "notify": ["U0EM"]}],
                              target="incident", alert=None, unacknowledged_for="16m"),
        "announcement.md": dict(base, event="ack", actor="U0RESPONDER", text="rolled back", old_severity="P2"),
        "role_commander.md": dict(base, assigned_by="U0RESPONDER"),
        "role_comms.md": dict(base, assigned_by="U0RESPONDER"),
        "role_scribe.md": dict(base, assigned_by=None),
        "report.md": dict(base, incident=incident, timeline=timeline, lessons=["alert earlier"],
                          actions=["add a provider timeout alarm"], notes=["provider confirmed"]),
        "alert_card.md": {"alert": alert, "now": fmt_time(now), "state": "open", "actor": None,
                          "ack_target": "15m", "deviation": "5.5σ below", "incident": None,
                          "repeats": 0},
        "incident_page.html": dict(base, incident=incident, timeline=timeline, lessons=["alert earlier"],
                                   actions=["add a provider timeout alarm"], notes=[], report=True,
                                   timeline_chart=timeline_chart(sample_incident(now), [], settings, now)),
        "incidents_page.html": {"now": fmt_time(now), "incidents": [dict(incident, link=link)],
                                "response_chart": response_chart([ResponseTimes(
                                    "P1", 2, 2, 1, 1, timedelta(minutes=4), timedelta(minutes=42),
                                    timedelta(minutes=15), timedelta(hours=1))])},
    }


def clock_text(clock: dict, verb: str, *, due: bool = True) -> str:
    """One SLA clock of `incident_view` in words; `due=False` leaves out the due time."""
    if clock["done"]:
        return f"{verb} after {clock['elapsed']} (target {clock['target']}{'' if clock['met'] else ', missed'})"
    if clock["met"]:
        return f"{clock['remaining']} left of {clock['target']}" + (f" (by {clock['due_at']})" if due else "")
    return f"OVERDUE by {clock['overdue_by']} (target {clock['target']})"
