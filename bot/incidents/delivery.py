"""A post Slack refused for good, on the incident timeline (the outbox's delivery-failed hook,
registered in bot/incidents/family.py): the incident the post named (`incident:N:…` refs), else
the open incident of the channel it was for, else of the channel its author asked in."""

from __future__ import annotations

from ..deliveries import DeliveryFailure
from . import service


async def record_failed_delivery(session, failure: DeliveryFailure) -> None:
    incident_id = None
    parts = (failure.ref or "").split(":")
    if len(parts) > 1 and parts[0] == "incident" and parts[1].isdigit():
        incident_id = int(parts[1])
    if incident_id is None:
        for channel in (failure.channel, failure.origin_channel):
            incident = await service.open_incident_in(session, channel) if channel else None
            if incident is not None:
                incident_id = incident.id
                break
    if incident_id is None:
        return None
    what = "an update of a message" if failure.kind == "update" else "a post"
    await service.write_entry(session, incident_id, at=failure.at, kind="delivery", actor=failure.author or "revops",
                              text=f"Not delivered: {what} to #{failure.channel} ({failure.reason})",
                              data={"message": failure.message_id, "error": failure.error})
    return None
