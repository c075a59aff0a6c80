"""Sample incidents for `revops console --demo`, and tour lines through the lifecycle."""

from __future__ import annotations

from datetime import timedelta

from ..services import Services
from .models import Incident
from .service import write_entry


async def seed_incidents(services: Services) -> None:
    """A resolved P2 from three days ago, so `incident list` and `incident stats` have history."""
    now = services.clock.now()
    start = now - timedelta(days=3, hours=2)
    async with services.db.transaction() as session:
        incident = Incident(
            channel="C0INCIDENT", open_channel=None, severity="P2", stage="renewals",
            summary="card renewals declined by the payment provider", status="resolved",
            declared_by="U0RESPONDER", commander="U0RESPONDER", detected_at=start, declared_at=start,
            acknowledged_at=start + timedelta(minutes=12), mitigated_at=start + timedelta(hours=1),
            resolved_at=start + timedelta(hours=2, minutes=10), resolved_by="U0RESPONDER",
            root_cause="an expired provider certificate", escalation_level=1,
            impact={"baseline": 0.9, "current": 0.72, "traffic": 40.0, "aov": 49.0},
        )
        session.add(incident)
        await session.flush()
        for offset, kind, actor, text in (
            (timedelta(0), "declare", "U0RESPONDER", "Declared P2 on renewals: card renewals declined"),
            (timedelta(minutes=12), "ack", "U0RESPONDER", "Acknowledged after 12m; incident commander"),
            (timedelta(minutes=40), "update", "U0RESPONDER", "Update: provider confirms a certificate problem"),
            (timedelta(hours=1), "mitigated", "U0RESPONDER", "Mitigated: retries moved to the backup provider"),
            (timedelta(hours=2, minutes=10), "resolve", "U0RESPONDER",
             "Resolved after 2h 10m. Root cause: an expired provider certificate"),
        ):
            await write_entry(session, incident.id, at=start + offset, kind=kind, actor=actor, text=text,
                              data={"text": text.split(": ", 1)[-1]} if kind == "update" else None)


INCIDENT_TOUR: list[tuple[str, str]] = [
    ("U0RESPONDER", "/revops incident declare P1 checkout conversion down baseline=3.2% current=2.1% "
                    "traffic=1200/h aov=80"),
    ("U0RESPONDER", "/revops incident ack"),
    ("U0RESPONDER", "/revops incident update rolled back the 11:02 deploy; conversion recovering"),
    ("U0VIEWER", "/revops incident status"),
    ("U0VIEWER", "/revops impact"),
    ("U0RESPONDER", "/revops incident note lesson: alert on payment-provider latency, not only errors"),
    ("U0RESPONDER", "/revops incident action add a provider timeout alarm"),
    ("U0RESPONDER", "/revops incident resolve a config push shortened the payment provider timeout"),
    ("U0VIEWER", "/revops incident report"),
    ("U0VIEWER", "/revops incident stats"),
]
