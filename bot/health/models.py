"""Tables of the health checks: every probe result (for the p95), the last known
status of each service (to post once on the transition to down). Which worker probes
in an interval the scheduler decides (the `health_probes` job)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..models import Base, BigId


class HealthProbe(Base):
    __tablename__ = "health_probes"
    __table_args__ = (Index("ix_health_probes_service_env_at", "service", "env", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(100))
    env: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))  # ok | degraded | down
    http_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    version: Mapped[str | None] = mapped_column(String(80))
    detail: Mapped[str | None] = mapped_column(String(200))


class HealthStatus(Base):
    """The last status seen per service and environment."""

    __tablename__ = "health_status"

    service: Mapped[str] = mapped_column(String(100), primary_key=True)
    env: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime]
    checked_at: Mapped[datetime]
