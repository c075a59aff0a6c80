"""Incident tables: incidents, their timelines and monitoring alerts (the jobs that
post their cadences live in the core's `scheduled_jobs`, bot/models.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..models import Base, BigId

STATUSES = ("declared", "acknowledged", "mitigated", "resolved")
SEVERITIES = ("P1", "P2", "P3")


# The incident roles (issue 19 item 4), in the order they are shown, with their names.
ROLES = {"commander": "incident commander", "comms": "communications lead", "scribe": "scribe"}


def role_holders(incident: Incident) -> list[tuple[str, str]]:
    """(role, user) for each role held, in ROLES' order."""
    return [(role, holder) for role in ROLES if (holder := getattr(incident, role, None))]


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(64), index=True)
    # The channel while the incident is open, NULL once resolved: one open incident per channel.
    open_channel: Mapped[str | None] = mapped_column(String(64), unique=True)
    severity: Mapped[str] = mapped_column(String(4))
    stage: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    declared_by: Mapped[str] = mapped_column(String(64))
    commander: Mapped[str | None] = mapped_column(String(64))
    # The other incident roles (`incident role comms|scribe @user`); the commander is above.
    comms: Mapped[str | None] = mapped_column(String(64))
    scribe: Mapped[str | None] = mapped_column(String(64))
    detected_at: Mapped[datetime]  # when the clocks started (the alert's arrival, or the declaration)
    declared_at: Mapped[datetime] = mapped_column(index=True)
    acknowledged_at: Mapped[datetime | None]
    mitigated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    root_cause: Mapped[str | None] = mapped_column(Text)
    # {"baseline": 0.032, "current": 0.021, "traffic": 1200.0, "aov": 80.0}; any may be missing
    impact: Mapped[dict | None]
    last_human_update_at: Mapped[datetime | None]
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)  # levels already notified
    alert_id: Mapped[int | None] = mapped_column(BigId)
    # Its own channel (issue 19 item 5; bot/incidents/channels.py). `own_channel_state`: None (it runs
    # in `channel`), "requested" (being created), "ready" (`own_channel` is `channel` from then on),
    # "failed" (it runs in the main channel, which was told why), "archived" (`archived_at`).
    # `home_channel`: where it was declared, which got the pointer to its own channel.
    own_channel: Mapped[str | None] = mapped_column(String(64))
    own_channel_state: Mapped[str | None] = mapped_column(String(16))
    home_channel: Mapped[str | None] = mapped_column(String(64))
    archived_at: Mapped[datetime | None]


class TimelineEntry(Base):
    __tablename__ = "incident_timeline"
    __table_args__ = (
        Index("ix_incident_timeline_kind_at", "incident_id", "kind", "at"),
        # A message pinned with a reaction is on an incident's timeline once (bot/incidents/pins.py).
        Index("ux_incident_timeline_source", "incident_id", "source_ts", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(BigId, ForeignKey("incidents.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None]
    # The Slack message the entry is (a 📌 reaction put it here): its ts in the incident's channel
    # and its permalink; NULL for every other entry.
    source_ts: Mapped[str | None] = mapped_column(String(32))
    source_permalink: Mapped[str | None] = mapped_column(Text)


class Alert(Base):
    """A monitoring alert (POST /alerts); P1/P2 ones get a card and an escalation clock."""

    __tablename__ = "incident_alerts"
    __table_args__ = (
        Index("ix_incident_alerts_dedupe_key", "dedupe_key"),
        Index("ix_incident_alerts_stage_metric", "stage", "metric"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    stage: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(100))
    baseline_mean: Mapped[float] = mapped_column(Float)
    baseline_std: Mapped[float] = mapped_column(Float)
    current: Mapped[float] = mapped_column(Float)
    traffic_per_hour: Mapped[float | None] = mapped_column(Float)
    aov: Mapped[float | None] = mapped_column(Float)
    sigma: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(16))  # recorded | open | acknowledged | declared
    acknowledged_by: Mapped[str | None] = mapped_column(String(64))
    acknowledged_at: Mapped[datetime | None]
    incident_id: Mapped[int | None] = mapped_column(BigId)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    # Repeats of this alert (the monitor's `dedupe_key`, or the same stage + metric inside
    # `[alerts] dedupe_window`) update its card and are counted here instead of posting new cards.
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    repeats: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_seen_at: Mapped[datetime | None]
