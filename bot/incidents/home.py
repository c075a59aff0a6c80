"""The incidents family's part of the App Home: the open incidents with severity, status, their
clocks (as `incident status` computes them: bot/incidents/views.py) and who holds each role.

Data, not Slack: a Reply per open incident."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.durations import format_duration
from bot.reply import Reply
from bot.roles import Role
from bot.settings import Settings
from bot.text import Channel, Code, Em, Icon, Text, User, clip

from . import service
from .models import ROLES, role_holders
from .views import clock_text, incident_view

SHOWN = 10
SUMMARY_CHARS = 300
ICONS = {"P1": "red_circle", "P2": "large_orange_circle", "P3": "large_yellow_circle"}


def last_update_text(incident, settings: Settings, now: datetime) -> str:
    every = settings.cfg.severity[incident.severity].revenue_update
    target = f" (every {format_duration(every)})" if every else ""
    if incident.last_human_update_at is None:
        return "no update yet" + target
    ago = format_duration(max(now - incident.last_human_update_at, timedelta()))
    late = every is not None and now - incident.last_human_update_at > every
    return f"{ago} ago{target}" + (", due" if late else "")


def incident_reply(incident, settings: Settings, now: datetime) -> Reply:
    view = incident_view(incident, settings, now)
    holders = [(role, user) for role, user in role_holders(incident)]
    fields = [
        ("Status", f"{incident.status}, open {view['duration']}"),
        ("Commander", Text(User(incident.commander, ping=False)) if incident.commander else "nobody yet"),
        ("Acknowledge", clock_text(view["ack"], "acknowledged", due=False)),
        ("Resolve", clock_text(view["resolve"], "resolved", due=False)),
        ("Last update", last_update_text(incident, settings, now)),
        *((ROLES[r].capitalize(), Text(User(u, ping=False))) for r, u in holders if r != "commander"),
    ]
    return Reply(Text(Icon(ICONS.get(incident.severity, "rotating_light")), " ",
                      Em(f"#{incident.id} [{incident.severity}] {incident.stage}"), ": ",
                      clip(incident.summary, SUMMARY_CHARS), " (in ", Channel(incident.channel), ")"),
                 fields=fields)


async def open_incidents(session: AsyncSession, user: str, role: Role, now: datetime,
                         settings: Settings) -> list[Reply]:
    rows = await service.open_incidents(session)
    shown = rows[-SHOWN:]  # the newest
    head = Reply(Text(Icon("rotating_light"), " ", Em(f"Open incidents: {len(rows)}")),
                 lines=[] if rows else ["None."],
                 footer=(Text(f"The newest {len(shown)} of {len(rows)}; all of them: ", Code("/revops incident list"))
                         if len(rows) > len(shown) else None))
    return [head, *(incident_reply(i, settings, now) for i in reversed(shown))]
