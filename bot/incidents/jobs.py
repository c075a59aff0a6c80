"""The incident job kinds: cadence updates, the no-update reminder, the
executive daily summary, and escalation (of incidents and of alerts).

Every post goes through `post_automated`, which holds it in panic mode; the
timeline then says what would have been posted. `INCIDENT_JOBS` is what the incidents
family hands the scheduler (bot/incidents/family.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from ..billing.views import daily_reconcile as reconcile_last_day
from ..billing.weekly_views import weekly_reconcile as reconcile_last_week
from ..models import ScheduledJob
from ..outbox import post_automated
from ..render_text import plain_text
from ..reply import Button, Reply
from ..scheduler import DONE, JobKind, JobRun
from ..templating import render_reply
from ..text import Link, Text
from . import service
from .models import Alert, Incident
from .views import dur, incident_view, timeline_view

WHAT = {
    "revenue_update": "revenue-team update",
    "engineering_update": "engineering update",
    "exec_summary": "executive daily summary",
    "update_reminder": "update reminder",
    "escalation": "escalation",
    "daily_reconcile": "daily reconcile",
    "weekly_reconcile": "weekly reconcile",
}


async def auto_post(run: JobRun, *, incident: Incident | None, channel: str | None, reply: Reply, kind: str,
                    data: dict | None = None) -> bool:
    """Post (or, in panic mode, hold) an automated message and say so on the incident's timeline.
    Returns whether it will actually be posted."""
    owner = (incident.commander or incident.declared_by) if incident is not None else None
    msg = await post_automated(run.session, channel=channel, reply=reply, at=run.now, owner=owner)
    held = msg is None or msg.status == "held"
    if incident is not None:
        what = WHAT.get(kind, kind)
        if msg is None:
            text = f"Did not post the {what}: no channel to post to"
        elif held:
            text = f"Panic mode: held the {what} (not posted). It would have said: {plain_text(reply.text)}"
        else:
            text = f"Auto-posted the {what}" + (f" ({run.missed} missed slot(s) caught up)" if run.missed else "")
        await service.write_entry(run.session, incident.id, at=run.now, kind="held" if held else "auto_post",
                                  actor=service.BOT, text=text,
                                  data={"job": kind, "held": held, "message": reply.plain()[:3000],
                                        "message_id": msg.id if msg else None, **(data or {})})
    return not held


async def _open_incident(run: JobRun) -> Incident | None:
    incident = await run.session.get(Incident, run.job.incident_id) if run.job.incident_id else None
    if incident is None or incident.status == "resolved":
        return None
    return incident


async def _cadence_update(run: JobRun, template: str, kind: str, **extra) -> str | None:
    incident = await _open_incident(run)
    if incident is None:
        return DONE
    view = incident_view(incident, run.settings, run.now)
    link = service.page_link(run.settings, incident.id, run.now)
    reply = render_reply(
        run.settings, template, incident=view, sequence=run.job.runs + 1, catch_up=run.missed,
        latest_update=await service.latest_update(run.session, incident.id),
        link=link, now=view["declared_at"], **extra,
    )
    if link:  # where the whole story is, should the renderer have to shorten the post
        reply.more = Text(Link(link, "incident page"))
    await auto_post(run, incident=incident, channel=incident.channel, reply=reply, kind=kind,
                    data={"sequence": run.job.runs + 1, "catch_up": run.missed})
    return None


async def revenue_update(run: JobRun):
    return await _cadence_update(run, "revenue_update.md", "revenue_update")


async def engineering_update(run: JobRun):
    incident = await _open_incident(run)
    recent = timeline_view(await service.timeline_of(run.session, incident.id, limit=5)) if incident else []
    return await _cadence_update(run, "engineering_update.md", "engineering_update", recent=recent)


async def exec_summary(run: JobRun):
    return await _cadence_update(run, "executive_summary.md", "exec_summary")


# The reminder's Snooze buttons (issue 19 item 6): the label's span, and how far it moves the next reminder.
SNOOZES = {"30m": timedelta(minutes=30), "1h": timedelta(hours=1)}
# `revops:form:<command>` opens that command's modal in Slack (bot/slack/modals.py).
POST_UPDATE_ACTION = "form:incident update"


def reminder_buttons(incident_id: int) -> list[Button]:
    """Post update (the update form, its incident filled in: "#<id>") and Snooze 30m / 1h
    (`incident.snooze`, value "<id> <span>")."""
    return [Button("Post update", POST_UPDATE_ACTION, f"#{incident_id}", style="primary"),
            *(Button(f"Snooze {span}", "incident.snooze", f"{incident_id} {span}") for span in SNOOZES)]


def reminder_key(incident_id: int) -> str:
    return f"incident:{incident_id}:update_reminder"


async def snooze_reminder(session, incident_id: int, by: timedelta, now: datetime) -> datetime | None:
    """Move the incident's next update reminder `by` later (from now, when it is overdue already);
    its new due time, or None when the incident has no reminder scheduled. Call it with the
    incident's row locked (the order every incident command and job takes)."""
    job = (await session.execute(select(ScheduledJob).where(
        ScheduledJob.key == reminder_key(incident_id), ScheduledJob.status == "active").with_for_update())
    ).scalar_one_or_none()
    if job is None:
        return None
    job.due_at = max(job.due_at, now) + by
    return job.due_at


async def update_reminder(run: JobRun):
    incident = await _open_incident(run)
    if incident is None:
        return DONE
    window = timedelta(seconds=run.job.every_seconds or 0)
    last = incident.last_human_update_at or incident.declared_at
    if run.now - last < window:
        return last + window  # a human spoke: check again when this window closes
    view = incident_view(incident, run.settings, run.now)
    reply = render_reply(run.settings, "update_reminder.md", incident=view, window=dur(window),
                         since=dur(run.now - last), link=None, now=view["declared_at"],
                         snoozes=list(SNOOZES))
    reply.buttons = reminder_buttons(incident.id)
    await auto_post(run, incident=incident, channel=incident.channel, reply=reply, kind="update_reminder")
    return None


async def escalation(run: JobRun):
    data = run.job.data or {}
    if data.get("target") == "alert":
        return await _escalate_alert(run, int(data["id"]))
    incident = await _open_incident(run)
    if incident is None or incident.acknowledged_at is not None or incident.severity == "P3":
        return DONE
    levels = service.escalation_levels(run.settings)
    due = [(i, name, lvl) for i, (name, lvl) in enumerate(levels)
           if i >= incident.escalation_level and incident.detected_at + lvl.after <= run.now]
    if due:
        view = incident_view(incident, run.settings, run.now)
        reply = render_reply(run.settings, "escalation.md", incident=view, target="incident", alert=None,
                             levels=[{"name": n, "after": dur(l.after), "notify": l.notify} for _, n, l in due],
                             unacknowledged_for=dur(run.now - incident.detected_at), link=None,
                             now=view["declared_at"])
        await auto_post(run, incident=incident, channel=incident.channel, reply=reply, kind="escalation",
                        data={"levels": [n for _, n, _ in due],
                              "notify": [u for _, _, l in due for u in l.notify]})
        incident.escalation_level = due[-1][0] + 1
    if incident.escalation_level >= len(levels):
        return DONE
    return incident.detected_at + levels[incident.escalation_level][1].after


async def _escalate_alert(run: JobRun, alert_id: int):
    alert = await run.session.get(Alert, alert_id)
    if alert is None or alert.status != "open":
        return DONE
    levels = service.escalation_levels(run.settings)
    due = [(i, name, lvl) for i, (name, lvl) in enumerate(levels)
           if i >= alert.escalation_level and alert.received_at + lvl.after <= run.now]
    if due:
        reply = render_reply(run.settings, "escalation.md", incident=None, target="alert", alert=alert,
                             levels=[{"name": n, "after": dur(l.after), "notify": l.notify} for _, n, l in due],
                             unacknowledged_for=dur(run.now - alert.received_at), link=None, now=None)
        await post_automated(run.session, channel=run.settings.cfg.slack.alerts_channel, reply=reply, at=run.now)
        alert.escalation_level = due[-1][0] + 1
    if alert.escalation_level >= len(levels):
        return DONE
    return alert.received_at + levels[alert.escalation_level][1].after


async def _reconcile_post(run: JobRun, make_reply, kind: str):
    """A billing reconcile, posted to the incident channel (held in panic mode)."""
    services = run.services
    if services.stripe is None or not getattr(services.stripe, "configured", True):
        return None
    reply = await make_reply(services)
    channel = run.settings.cfg.slack.incident_channel
    async with services.db.transaction() as session:
        open_here = await service.open_incident_in(session, channel)
        inner = JobRun(services, session, run.job, run.now, run.missed)
        await auto_post(inner, incident=open_here, channel=channel, reply=reply, kind=kind)
    return None


async def daily_reconcile(run: JobRun):
    """The billing issue's daily reconcile."""
    return await _reconcile_post(run, reconcile_last_day, "daily_reconcile")


async def weekly_reconcile(run: JobRun):
    """Issue 18's weekly reconcile (credit usage, paid revenue per day), at `[reconcile] weekly`."""
    return await _reconcile_post(run, reconcile_last_week, "weekly_reconcile")


def weekly_slot(settings, after):
    weekly = settings.cfg.reconcile.weekly
    return weekly.next_after(after) if weekly is not None else None


INCIDENT_JOBS = (
    # An incident's jobs lock the incident row before their own, as the incident commands do.
    JobKind("revenue_update", revenue_update, lock_first=service.lock_incident),
    JobKind("engineering_update", engineering_update, lock_first=service.lock_incident),
    JobKind("exec_summary", exec_summary, lock_first=service.lock_incident),
    JobKind("update_reminder", update_reminder, lock_first=service.lock_incident),
    JobKind("escalation", escalation, lock_first=service.lock_incident),
    # Stripe is read after the claim commits: no transaction open while it is waited on.
    JobKind("daily_reconcile", daily_reconcile, every=timedelta(days=1), after_claim=True),
    # On the calendar: the next `[reconcile] weekly` slot ("mon 09:00" UTC); "off" stops it.
    JobKind("weekly_reconcile", weekly_reconcile, at=weekly_slot, after_claim=True),
)
