"""The automated post about a production service that has just gone down.

A renderer (and its hand-off to the outbox), not domain code: `history.record_probes`
says which services went down; the probe round and the `health` command announce them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from ..outbox import post_automated
from ..reply import Reply
from ..settings import Settings
from .probes import ProbeResult
from ..text import Code, Em, Icon, Text


def down_post(r: ProbeResult, at: datetime) -> Reply:
    parts = [r.detail]
    if r.latency_ms is not None:
        parts.append(f"{r.latency_ms:.0f} ms")
    return Reply(
        Text(Icon("red_circle"), " ", Em(r.name), f" ({r.env}) is down: {' · '.join(parts)}."),
        footer=Text(f"Health probe at {at:%Y-%m-%d %H:%M:%S} UTC. ", Code(f"/revops health {r.name}"),
                    " to check again."),
        private=False,
    )


async def announce_down(session: AsyncSession, went_down: list[ProbeResult], *, at: datetime,
                        settings: Settings) -> None:
    """One post to the incident channel per service that went down (held, not sent, in panic mode)."""
    for r in went_down:
        await post_automated(session, channel=settings.cfg.slack.incident_channel, reply=down_post(r, at), at=at)
