"""Monitoring alert intake (`POST /alerts`, SPEC §3).

Deviation in σ = |current − baseline_mean| / baseline_std decides severity:
> 3σ P1, > 2σ P2, otherwise P3 (recorded, not posted). P1/P2 post a card in
the alerts channel with **Acknowledge** and **Declare incident** (`views.announce_alert`,
called by the route), and start the acknowledgement clock and escalation at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..scheduler import upsert_job
from ..services import Services
from . import service
from .impact import MAX_AOV, MAX_TRAFFIC
from .models import Alert

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RANK = {"P3": 0, "P2": 1, "P1": 2}
LIVE = ("open", "acknowledged")  # an alert whose card a repeat updates


def _number(**bounds):
    """A JSON number (strict: no booleans, no strings), finite."""
    return Field(strict=True, allow_inf_nan=False, **bounds)


class AlertBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    stage: str = Field(min_length=1, max_length=100, strict=True)
    metric: str = Field(min_length=1, max_length=100, strict=True)
    baseline_mean: float = _number()
    baseline_std: float = _number(gt=0)
    current: float = _number()
    traffic_per_hour: float | None = _number(default=None, ge=0, le=MAX_TRAFFIC)
    aov: float | None = _number(default=None, ge=0, le=MAX_AOV)
    dedupe_key: str | None = Field(default=None, min_length=1, max_length=200, strict=True)

    @field_validator("stage", "metric", "dedupe_key")
    @classmethod
    def _printable(cls, value):
        if value is not None and _CONTROL.search(value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("baseline_mean", "baseline_std", "current", "traffic_per_hour", "aov")
    @classmethod
    def _finite(cls, value):
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _finite_deviation(self):
        if not math.isfinite(deviation(self)):
            raise ValueError("the deviation (current − baseline_mean) / baseline_std is not a finite number: "
                             "baseline_std is too small for these figures")
        return self


@dataclass
class Received:
    """The alert a POST made or updated; `repeated`: it was a repeat of an open one."""
    alert: Alert
    repeated: bool


def validation_problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "float_type":
            err = {**err, "msg": "must be a JSON number (not a string or a boolean)"}
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


async def open_repeat_of(session: AsyncSession, body: AlertBody, now: datetime, window) -> Alert | None:
    """The live alert this one repeats: the same `dedupe_key`; without one, the same stage and
    metric last seen inside the window. Locked (PostgreSQL) so two repeats count twice."""
    query = select(Alert).where(Alert.status.in_(LIVE))
    if body.dedupe_key is not None:
        query = query.where(Alert.dedupe_key == body.dedupe_key)
    else:
        if window.total_seconds() <= 0:
            return None
        query = query.where(Alert.stage == body.stage, Alert.metric == body.metric,
                            func.coalesce(Alert.last_seen_at, Alert.received_at) > now - window)
    return (await session.execute(query.order_by(Alert.id.desc()).limit(1).with_for_update())).scalars().first()


async def receive_alert(services: Services, session: AsyncSession, body: AlertBody) -> Received:
    now = services.clock.now()
    sigma = deviation(body)
    severity = severity_for(sigma)
    repeat = await open_repeat_of(session, body, now, services.settings.cfg.alerts.dedupe_window)
    if repeat is not None:
        repeat.repeats = (repeat.repeats or 0) + 1
        repeat.last_seen_at = now
        repeat.baseline_mean, repeat.baseline_std, repeat.current = body.baseline_mean, body.baseline_std, body.current
        repeat.traffic_per_hour, repeat.aov, repeat.sigma = body.traffic_per_hour, body.aov, sigma
        if _RANK[severity] > _RANK[repeat.severity]:
            repeat.severity = severity
        await session.flush()
        return Received(repeat, True)
    alert = Alert(received_at=now, stage=body.stage, metric=body.metric, baseline_mean=body.baseline_mean,
                  baseline_std=body.baseline_std, current=body.current, traffic_per_hour=body.traffic_per_hour,
                  aov=body.aov, sigma=sigma, severity=severity, status="recorded" if severity == "P3" else "open",
                  escalation_level=0, dedupe_key=body.dedupe_key, repeats=0, last_seen_at=now)
    session.add(alert)
    await session.flush()
    if severity == "P3":
        return Received(alert, False)
    levels = service.escalation_levels(services.settings)
    if levels:
        await upsert_job(session, key=f"alert:{alert.id}:escalation", kind="escalation",
                         due_at=now + levels[0][1].after, data={"target": "alert", "id": alert.id})
    return Received(alert, False)
