"""Monitoring alert intake (`POST /alerts`, SPEC §3).

Deviation in σ = |current − baseline_mean| / baseline_std decides severity:
> 3σ P1, > 2σ P2, otherwise P3 (recorded, not posted). P1/P2 post a card in
the alerts channel with **Acknowledge** and **Declare incident** (`views.announce_alert`,
called by the route), and start the acknowledgement clock and escalation at once.
"""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from ..scheduler import upsert_job
from ..services import Services
from . import service
from .models import Alert


class AlertBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    stage: str = Field(min_length=1, max_length=100)
    metric: str = Field(min_length=1, max_length=100)
    baseline_mean: float
    baseline_std: float = Field(gt=0)
    current: float
    traffic_per_hour: float | None = Field(default=None, ge=0)
    aov: float | None = Field(default=None, ge=0)

    @field_validator("baseline_mean", "baseline_std", "current", "traffic_per_hour", "aov")
    @classmethod
    def _finite(cls, value):
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


def validation_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{field}: {msg}")
    return out


def deviation(body: AlertBody) -> float:
    return abs(body.current - body.baseline_mean) / body.baseline_std


def severity_for(sigma: float) -> str:
    if sigma > 3:
        return "P1"
    if sigma > 2:
        return "P2"
    return "P3"


async def receive_alert(services: Services, session: AsyncSession, body: AlertBody) -> Alert:
    now = services.clock.now()
    sigma = deviation(body)
    severity = severity_for(sigma)
    alert = Alert(received_at=now, stage=body.stage, metric=body.metric, baseline_mean=body.baseline_mean,
                  baseline_std=body.baseline_std, current=body.current, traffic_per_hour=body.traffic_per_hour,
                  aov=body.aov, sigma=sigma, severity=severity, status="recorded" if severity == "P3" else "open",
                  escalation_level=0)
    session.add(alert)
    await session.flush()
    if severity == "P3":
        return alert
    levels = service.escalation_levels(services.settings)
    if levels:
        await upsert_job(session, key=f"alert:{alert.id}:escalation", kind="escalation",
                         due_at=now + levels[0][1].after, data={"target": "alert", "id": alert.id})
    return alert
