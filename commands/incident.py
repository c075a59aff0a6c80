"""`incident …`: declare → ack → update → mitigated → resolve, plus status,
timeline, report, list, stats and a signed link to the incident page (SPEC §4, §7).

Every command addresses the open incident of the channel, or another with `#ID`.
Handlers hand their timeline entries to the router's recorder in `ctx.timeline`.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from sqlalchemy import bindparam, select

from bot.context import Context
from bot.durations import format_duration
from bot.errors import Conflict, NotFound, UsageError
from bot.forms import Field, Form
from bot.grammar import as_id, as_user
from bot.incidents import channels, links, service
from bot.incidents.impact import Impact, parse_figures
from bot.incidents.jobs import SNOOZES, snooze_reminder
from bot.incidents.models import ROLES, Alert, Incident, role_holders
from bot.incidents.views import alert_card, clock_text, fmt_time, incident_view, timeline_view
from bot.models import ScheduledJob
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.templating import render_reply
from bot.text import Channel, Code, Link, Text, User, clip, join

commands = CommandSet("incident")

FIGURES = "[baseline=NUM] [current=NUM] [traffic=NUM] [aov=NUM]"
STATS_WINDOW = timedelta(days=30)
TIMELINE_LIMIT = 25  # newest entries `incident timeline` shows in Slack (the page shows them all)
ENTRY_CHARS = 300  # of one timeline entry's text in Slack
UPDATE_CHARS = 500  # of user text (latest update, root cause) in a reply
LIST_SUMMARY_CHARS = 150
LIST_LIMIT = 30
REPORT_ENTRIES = 15  # newest timeline entries in the report posted to Slack
REPORT_ITEMS = 8  # lessons and action items each (the page has them all)


def _entry(ctx: Context, incident: Incident, kind: str, line: str, **data) -> None:
    ctx.timeline.append((kind, line, {"incident_id": incident.id, **data}))


def _incident_channel(ctx: Context) -> str:
    channel = ctx.channel or ctx.settings.cfg.slack.incident_channel
    if not channel:
        raise UsageError("run this in a channel (or set [slack] incident_channel)")
    return channel


async def _target(ctx: Context, ref: int | None, *, doing: str | None = None, lock: bool = False,
                  with_latest_update: bool = False) -> Incident:
    """The addressed incident; for lifecycle commands a clear answer when the channel's last one is resolved."""
    try:
        return await service.find_incident(ctx.session, ctx.channel, ref, lock=lock,
                                           with_latest_update=with_latest_update)
    except NotFound:
        if ref is not None:
            raise
        await channels.say_where_it_moved(ctx.session, ctx.channel)
        last = (await ctx.session.execute(
            select(Incident).where(Incident.channel == (ctx.channel or "")).order_by(Incident.id.desc()).limit(1)
        )).scalar_one_or_none()
        if doing is None:
            if last is None:
                raise
            return last  # reading: the channel's most recent incident, resolved or not
        if last is not None and last.status == "resolved":
            raise Conflict(Text(f"There is no open incident in this channel: #{last.id} was already resolved at "
                                f"{last.resolved_at:%Y-%m-%d %H:%M} UTC by ", User(last.resolved_by),
                                f", so there is nothing to {doing}. Declare a new one with ",
                                Code("/revops incident declare …"), ".")) from None
        raise


def _in_words(handler):
    """The lifecycle's refusals (`service.AlreadyResolved`, `AlreadyAcknowledged`) said with who and when."""

    @functools.wraps(handler)
    async def run(ctx: Context, args: dict) -> Reply:
        try:
            return await handler(ctx, args)
        except service.AlreadyResolved as exc:
            i = exc.incident
            raise Conflict(Text(f"Incident #{i.id} was already resolved at {i.resolved_at:%Y-%m-%d %H:%M} UTC "
                                "by ", User(i.resolved_by), f"; it cannot be {exc.what}.")) from None
        except service.AlreadyAcknowledged as exc:
            i = exc.incident
            raise Conflict(Text(f"Incident #{i.id} was already acknowledged by ", User(i.commander),
                                f" at {i.acknowledged_at:%H:%M} UTC; they are the incident commander.")) from None

    return run


def _ref_arg(args: dict) -> int | None:
    return service.parse_ref(args.get("#ID"))


def _view(ctx: Context, incident: Incident) -> dict:
    return incident_view(incident, ctx.settings, ctx.now)


def _announce(ctx: Context, incident: Incident, event: str, view: dict | None = None, **extra) -> None:
    """The channel's announcement of `event`; `view` is the incident's view when the caller has it."""
    reply = render_reply(ctx.settings, "announcement.md", incident=view or _view(ctx, incident), event=event,
                         actor=ctx.actor, text=extra.pop("text", None), old_severity=extra.pop("old_severity", None),
                         link=extra.pop("link", None), now=fmt_time(ctx.now), **extra)
    ctx.post(incident.channel, reply)


def _brief(ctx: Context, incident: Incident, role: str, holder: str, view: dict | None = None) -> None:
    """The new holder of `role` gets that role's checklist by DM (templates/role_<role>.md)."""
    reply = render_reply(ctx.settings, f"role_{role}.md", incident=view or _view(ctx, incident),
                         assigned_by=ctx.actor if ctx.actor != holder else None,
                         link=service.page_link(ctx.settings, incident.id, ctx.now), now=fmt_time(ctx.now))
    ctx.post(holder, reply)


def _impact_text(figures: dict) -> str:
    impact = Impact.from_figures(figures)
    if impact is None:
        return ""
    return f" (impact ${impact.view()['hourly']}/hour)"


# --- forms: what `incident declare` / `incident update` ask for when typed without arguments (bot/forms.py)


async def _show_incident(services, ref: str) -> Text | None:
    """The incident an update form addresses (a button fills in its #ID)."""
    number = as_id(ref)
    if number is None:
        return None
    async with services.db.reading() as session:
        incident = await session.get(Incident, number)
    if incident is None:
        return Text(f"There is no incident #{number}.")
    return Text(f"#{incident.id} {incident.severity} on {incident.stage} ({incident.status}): ",
                clip(incident.summary, 200))


def _figure(name: str, label: str, hint: str) -> Field:
    return Field(name, label, optional=True, hint=hint)


commands.form("incident declare", Form("Declare an incident", (
    Field("severity", "Severity", kind="select", options=("P1", "P2", "P3"),
          hint="P1: customers cannot pay or sign up; P3: minor"),
    Field("stage", "Stage", hint="the part of the funnel hit, one word: checkout, signup, billing…"),
    Field("summary", "Summary", kind="multiline", hint="what customers see; posted in the initial communication"),
    _figure("baseline", "Baseline conversion (optional)", "before the incident, e.g. 3.2%"),
    _figure("current", "Current conversion (optional)", "now, e.g. 2.1%"),
    _figure("traffic", "Traffic (optional)", "visits an hour, e.g. 1200/h"),
    _figure("aov", "Average order value (optional)", "e.g. 80"),
    Field("channel", "Its own channel", kind="select", options=("new",), optional=True,
          hint="new: a channel #inc-<number>-<stage> for this incident"),
), submit="Declare", intro="All four impact figures give the revenue lost per hour."))
commands.form("incident update", Form("Post an update", (
    Field("incident", "Incident", optional=True, hint="#ID; empty: this channel's open incident",
          show=_show_incident, prefix="#",
          check=lambda raw: None if as_id(raw) else "write the incident's number, such as #12"),
    Field("text", "Update", kind="multiline", hint="what changed, what is next; posted in the incident channel"),
), submit="Post update"))


# --- declare ---------------------------------------------------------------------------------------------


@commands.command(f"incident declare <severity> <stage> <summary...> {FIGURES} [--channel new]",
                  summary="open an incident (severity P1, P2 or P3) in this channel and post the initial "
                          "communication (--channel new: in a channel of its own, #inc-<number>-<stage>)",
                  role=Role.responder, mutating=True,
                  examples=["incident declare P1 checkout conversion down baseline=3.2% current=2.1% "
                            "traffic=1200/h aov=80", "incident declare P2 billing invoices stuck --channel new"])
async def declare(ctx: Context, args: dict) -> Reply:
    severity = service.parse_severity(args["severity"])
    figures = parse_figures(args)
    own_channel = channels.wants_own_channel(ctx.settings, args.get("channel"))
    channel = _incident_channel(ctx)
    incident = await service.declare(ctx.session, ctx.settings, channel=channel, actor=ctx.actor,
                                     severity=severity, stage=args["stage"], summary=args["summary"],
                                     figures=figures, now=ctx.now)
    _entry(ctx, incident, "declare", f"Declared {severity} on {incident.stage}: {incident.summary}"
           + _impact_text(figures), severity=severity, impact=figures or None)
    link = service.page_link(ctx.settings, incident.id, ctx.now)
    initial = render_reply(ctx.settings, f"initial_{severity.lower()}.md", incident=_view(ctx, incident),
                           link=link, now=fmt_time(ctx.now))
    if own_channel:  # created by a job after this commits; the initial communication goes there
        await channels.request_channel(ctx.session, incident, ctx.now)
    else:
        ctx.post(channel, initial, ref=f"incident:{incident.id}:initial")
    ctx.note(subject=f"incident:{incident.id}", detail=f"declared {severity} {incident.stage}",
             **({"channel": "new"} if own_channel else {}))
    ack_hint = "" if severity == "P3" and not ctx.settings.cfg.escalation else \
        Text(f" Acknowledge within {format_duration(ctx.settings.cfg.severity[severity].ack)} with ",
             Code("/revops incident ack"), ".")
    if own_channel:
        return Reply(Text(f"Incident #{incident.id} declared ({severity}, {incident.stage}).",
                          channels.pending_words(incident), ack_hint))
    return Reply(Text(f"Incident #{incident.id} declared ({severity}, {incident.stage}); the initial communication "
                      "is posted in ", Channel(channel), ".", ack_hint))


# --- drive ------------------------------------------------------------------------------------------------


@commands.command("incident ack [#ID]", summary="acknowledge: you become the incident commander; stops escalation",
                  role=Role.responder, mutating=True)
@_in_words
async def ack(ctx: Context, args: dict) -> Reply:
    incident = await _target(ctx, _ref_arg(args), doing="acknowledge", lock=True)
    await service.acknowledge(ctx.session, incident, actor=ctx.actor, now=ctx.now)
    await channels.invite_later(ctx.session, incident, ctx.actor, ctx.now)
    elapsed = format_duration(ctx.now - incident.detected_at)
    _entry(ctx, incident, "ack", f"Acknowledged after {elapsed}; incident commander")
    view = _view(ctx, incident)  # once: the announcement and the commander's checklist show the same
    _announce(ctx, incident, "ack", view)
    _brief(ctx, incident, "commander", ctx.actor, view)
    ctx.note(subject=f"incident:{incident.id}", detail="acknowledged")
    return Reply(f"You are the incident commander of #{incident.id} (acknowledged after {elapsed}).")


@commands.command(f"incident update <text...> {FIGURES}",
                  summary="post a status update (#ID first to address another incident; impact figures optional)",
                  role=Role.responder, mutating=True)
@_in_words
async def update(ctx: Context, args: dict) -> Reply:
    ref, text = service.split_ref(args.get("text"))
    figures = parse_figures(args)
    if not text:
        raise UsageError("missing <text>: say what changed")
    incident = await _target(ctx, ref, doing="update", lock=True)
    service.require_open(incident, "updated")
    if figures:
        incident.impact = {**(incident.impact or {}), **figures}
    incident.last_human_update_at = ctx.now
    _entry(ctx, incident, "update", f"Update: {text}" + _impact_text(incident.impact or {}) if figures
           else f"Update: {text}", text=text, impact=figures or None)
    _announce(ctx, incident, "update", text=text)
    ctx.note(subject=f"incident:{incident.id}", detail="update")
    return Reply(f"Update posted on #{incident.id}.")


@commands.command("incident note <text...>",
                  summary="add a note to the timeline (start with \"lesson:\" for the report's lessons learned)",
                  role=Role.responder, mutating=True)
async def note(ctx: Context, args: dict) -> Reply:
    ref, text = service.split_ref(args.get("text"))
    if not text:
        raise UsageError("missing <text>")
    incident = await _target(ctx, ref)
    lesson = service.lesson_text(text)
    _entry(ctx, incident, "note", ("Lesson learned: " + lesson) if lesson is not None else f"Note: {text}", text=text)
    ctx.note(subject=f"incident:{incident.id}", detail="note")
    where = "the report's lessons learned" if lesson is not None else "the timeline"
    return Reply(f"Added to {where} of #{incident.id}.")


@commands.command("incident action <text...>", summary="add an action item for the post-incident report",
                  role=Role.responder, mutating=True)
async def action(ctx: Context, args: dict) -> Reply:
    ref, text = service.split_ref(args.get("text"))
    if not text:
        raise UsageError("missing <text>")
    incident = await _target(ctx, ref)
    _entry(ctx, incident, "action", f"Action item: {text}", text=text)
    ctx.note(subject=f"incident:{incident.id}", detail="action item")
    return Reply(f"Action item added to the report of #{incident.id}.")


@commands.command("incident severity <severity> [#ID]", summary="change the severity (P1, P2 or P3) and its clocks",
                  role=Role.responder, mutating=True)
@_in_words
async def severity(ctx: Context, args: dict) -> Reply:
    raw, ref_raw = args["severity"], args.get("#ID")
    if raw.startswith("#") and ref_raw:
        raw, ref_raw = ref_raw, raw
    new = service.parse_severity(raw)
    incident = await _target(ctx, service.parse_ref(ref_raw), doing="re-grade", lock=True)
    service.require_open(incident, "re-graded")
    old = incident.severity
    if old == new:
        raise Conflict(f"Incident #{incident.id} is already {new}.")
    incident.severity = new
    await service.schedule_jobs(ctx.session, ctx.settings, incident, ctx.now)
    await channels.retopic_later(ctx.session, incident, ctx.now)
    _entry(ctx, incident, "severity", f"Severity changed {old} → {new}", old=old, new=new)
    _announce(ctx, incident, "severity", old_severity=old)
    ctx.note(subject=f"incident:{incident.id}", detail=f"severity {old} -> {new}")
    return Reply(f"Incident #{incident.id} is now {new} (was {old}); cadences and clocks follow the new severity.")


@commands.command("incident mitigated [text...]", summary="mark the impact as mitigated (the fix may still be pending)",
                  role=Role.responder, mutating=True)
@_in_words
async def mitigated(ctx: Context, args: dict) -> Reply:
    ref, text = service.split_ref(args.get("text"))
    incident = await _target(ctx, ref, doing="mitigate", lock=True)
    service.require_open(incident, "mitigated")
    if incident.status == "mitigated":
        raise Conflict(f"Incident #{incident.id} was already marked mitigated at {incident.mitigated_at:%H:%M} UTC.")
    if incident.acknowledged_at is None:
        await service.acknowledge(ctx.session, incident, actor=ctx.actor, now=ctx.now)
        _entry(ctx, incident, "ack", "Acknowledged (by mitigating); incident commander")
        _brief(ctx, incident, "commander", ctx.actor)
    incident.status = "mitigated"
    incident.mitigated_at = ctx.now
    incident.last_human_update_at = ctx.now
    _entry(ctx, incident, "mitigated", "Mitigated" + (f": {text}" if text else ""), text=text or None)
    _announce(ctx, incident, "mitigated", text=text or None)
    ctx.note(subject=f"incident:{incident.id}", detail="mitigated")
    return Reply(Text(f"Incident #{incident.id} marked mitigated. Resolve it with ",
                      Code("/revops incident resolve <root cause>"), "."))


@commands.command("incident resolve <root_cause...>", summary="resolve with the root cause; posts the report link",
                  role=Role.responder, mutating=True)
@_in_words
async def resolve(ctx: Context, args: dict) -> Reply:
    ref, cause = service.split_ref(args.get("root_cause"))
    if not cause:
        raise UsageError("missing <root_cause>: say what caused it")
    incident = await _target(ctx, ref, doing="resolve", lock=True)
    await service.resolve(ctx.session, incident, actor=ctx.actor, root_cause=cause, now=ctx.now)
    await channels.schedule_archive(ctx.session, ctx.settings, incident, ctx.now)
    duration = format_duration(ctx.now - incident.detected_at)
    _entry(ctx, incident, "resolve", f"Resolved after {duration}. Root cause: {cause}", root_cause=cause)
    link = service.page_link(ctx.settings, incident.id, ctx.now)
    _announce(ctx, incident, "resolved", link=link)
    ctx.note(subject=f"incident:{incident.id}", detail=f"resolved after {duration}")
    return Reply(Text(f"Incident #{incident.id} resolved after {duration}. ", Code(f"/revops incident report #{incident.id}"),
                      " shows the post-incident report; add lessons and action items with ",
                      Code("incident note lesson: …"), " and ", Code("incident action …"), "."))


@commands.command("incident role <commander|comms|scribe> <user> [#ID]",
                  summary="give an incident role to someone (@user); they get its checklist by DM",
                  role=Role.responder, mutating=True,
                  examples=["incident role comms @ada", "incident role scribe @grace #12"])
@_in_words
async def role(ctx: Context, args: dict) -> Reply:
    which, raw, ref_raw = args["choice"], args["user"], args.get("#ID")
    if raw.startswith("#") and ref_raw:
        raw, ref_raw = ref_raw, raw
    holder = as_user(raw)
    if holder is None:
        raise UsageError(Text("expected a person as ", Code("@name"), ", got ", Code(clip(raw, 40))))
    ref = service.parse_ref(ref_raw)
    incident = await _target(ctx, ref, doing="give roles on", lock=True)
    previous = service.assign_role(incident, which, holder)
    await channels.invite_later(ctx.session, incident, holder, ctx.now)
    name = ROLES[which]
    _entry(ctx, incident, "role", f"{name[0].upper()}{name[1:]}: @{holder}" + (f" (was @{previous})" if previous else ""),
           role=which, user=holder, previous=previous)
    view = _view(ctx, incident)
    _announce(ctx, incident, "role", view, holder=holder, role_name=name, previous=previous)
    _brief(ctx, incident, which, holder, view)
    ctx.note(subject=f"incident:{incident.id}", detail=f"{which}: {holder}", role=which, user=holder, previous=previous)
    note = " (the incident is not acknowledged yet: escalation goes on until someone runs incident ack)" \
        if which == "commander" and incident.acknowledged_at is None else ""
    return Reply(Text(User(holder, ping=False), f" is now the {name} of incident #{incident.id}; "
                      f"their checklist is on its way by DM.{note}"))


# --- read -------------------------------------------------------------------------------------------------

_JOBS = ScheduledJob.__table__
_ACTIVE_JOBS = (select(_JOBS.c.kind, _JOBS.c.due_at)
                .where(_JOBS.c.incident_id == bindparam("incident_id"), _JOBS.c.status == "active")
                .order_by(_JOBS.c.due_at))  # built once: `incident status` runs it on every look


async def _next_posts(ctx: Context, incident: Incident) -> str:
    if hasattr(incident, "latest_update_text"):  # read with its jobs' next times (the status row)
        jobs = service.row_next_due(incident)
    else:
        jobs = [(j.kind, j.due_at) for j in (await ctx.session.rows(_ACTIVE_JOBS, {"incident_id": incident.id})).all()]
    names = {"revenue_update": "revenue update", "engineering_update": "engineering update",
             "update_reminder": "reminder check", "exec_summary": "executive summary", "escalation": "escalation"}
    return ", ".join(f"{names.get(kind, kind)} in {format_duration(max(due_at - ctx.now, timedelta()))}"
                     for kind, due_at in jobs) or "none"


@commands.command("incident status [#ID]", summary="the incident's state, clocks and impact", role=Role.viewer)
async def status(ctx: Context, args: dict) -> Reply:
    incident = await _target(ctx, _ref_arg(args), with_latest_update=True)
    view = _view(ctx, incident)
    fields = [
        ("Severity", incident.severity),
        ("Status", incident.status),
        ("Commander", Text(User(incident.commander)) if incident.commander else "nobody yet"),
        *((ROLES[r].capitalize(), Text(User(u))) for r, u in role_holders(incident) if r != "commander"),
        ("Declared", Text(f"{view['declared_at']} by ", User(incident.declared_by))),
        ("Acknowledge", clock_text(view["ack"], "acknowledged")),
        ("Resolve", clock_text(view["resolve"], "resolved")),
    ]
    if view["impact"]:
        imp = view["impact"]
        fields.append(("Impact", f"${imp['hourly']}/hour, ${imp['daily']}/day; ${imp['lost_so_far']} lost so far"))
    elif view["impact_partial"]:
        fields.append(("Impact", "incomplete figures: " + ", ".join(f"{k}={v}" for k, v in view["impact_partial"].items())))
    if incident.status != "resolved":
        fields.append(("Next automated posts", await _next_posts(ctx, incident)))
    else:
        fields.append(("Root cause", clip(incident.root_cause or "—", UPDATE_CHARS)))
    last = (service.row_latest_update(incident) if hasattr(incident, "latest_update_text")
            else await service.latest_update(ctx.session, incident.id))  # the resolved fallback is an ORM object
    lines = [Text("Latest update: ", clip(last, UPDATE_CHARS))] if last else []
    return Reply(Text(f"Incident #{incident.id} [{incident.severity}] {incident.stage}: ", clip(incident.summary, 500),
                      f" — {incident.status}, {view['duration']}"), lines=lines, fields=fields)


@commands.command("incident timeline [#ID]", summary="everything that happened, with who and when", role=Role.viewer)
async def timeline(ctx: Context, args: dict) -> Reply:
    incident = await _target(ctx, _ref_arg(args))
    total = await service.timeline_count(ctx.session, incident.id)
    shown = await service.timeline_of(ctx.session, incident.id, limit=TIMELINE_LIMIT)
    lines = [Text(f"{e['at']}  ", User(e["actor"], ping=False) if e["actor"] != service.BOT else "revops", "  ",
                  clip(e["text"], ENTRY_CHARS),
                  *((" (", Link(e["permalink"], "in Slack"), ")") if e["permalink"] else ()))  # a pinned message
             for e in timeline_view(shown)]
    more = _page_more(ctx, incident)
    footer = None
    if total > len(shown):
        footer = Text(f"Showing the newest {len(shown)} of {total} entries — full list: ", more)
    elif any(len(e.text) > ENTRY_CHARS for e in shown):
        footer = Text("Long entries are shortened here; whole on the page: ", more)
    return Reply(Text(f"Timeline of incident #{incident.id} ({incident.severity}, {incident.stage}) — "
                      f"{total} entries"), lines=lines or ["(nothing recorded)"], footer=footer, keep="end", more=more)


def _page_more(ctx: Context, incident: Incident) -> Text:
    """Where the whole timeline is: the incident page's link, or the command that gives it."""
    url = service.page_link(ctx.settings, incident.id, ctx.now)
    if url:
        return Text(Link(url, "incident page"))
    return Text("the incident page (", Code(f"/revops incident link #{incident.id}"), ")")


async def _report_reply(ctx: Context, incident: Incident) -> Reply:
    entries = await service.timeline_of(ctx.session, incident.id)
    link = service.page_link(ctx.settings, incident.id, ctx.now)
    parts = service.report_parts(entries)
    reply = render_reply(ctx.settings, "report.md", incident=_view(ctx, incident),
                         timeline=timeline_view(entries[-REPORT_ENTRIES:]), timeline_total=len(entries),
                         link=link, now=fmt_time(ctx.now),
                         lessons=parts["lessons"][:REPORT_ITEMS], lessons_total=len(parts["lessons"]),
                         actions=parts["actions"][:REPORT_ITEMS], actions_total=len(parts["actions"]),
                         notes=parts["notes"])
    reply.more = _page_more(ctx, incident)  # should the renderer still have to shorten it (an operator's template)
    return reply


@commands.command("incident report [#ID]", summary="the post-incident report (posted in the channel, with the page link)",
                  role=Role.viewer)
async def report(ctx: Context, args: dict) -> Reply:
    incident = await _target(ctx, _ref_arg(args))
    if incident.status != "resolved" and args.get("#ID") is None:
        pass  # a draft report of an open incident is useful too
    return await _report_reply(ctx, incident)


@commands.command("incident link [#ID]", summary="a signed link to the incident page (expires in 7 days)",
                  role=Role.viewer)
async def link(ctx: Context, args: dict) -> Reply:
    incident = await _target(ctx, _ref_arg(args))
    url = service.page_link(ctx.settings, incident.id, ctx.now)
    if url is None:
        return Reply("I cannot make a link: set REVOPS_BASE_URL (the bot's public URL) and SLACK_SIGNING_SECRET.")
    return Reply(Text(f"Incident #{incident.id} page (timeline and report): ", Link(url, url.split('?')[0])),
                 footer="The link expires in 7 days.", private=False)


@commands.command("incident list", summary="open incidents and those of the last 30 days", role=Role.viewer)
async def list_incidents(ctx: Context, args: dict) -> Reply:
    since = ctx.now - STATS_WINDOW
    rows = (await ctx.session.execute(
        select(Incident).where((Incident.status != "resolved") | (Incident.declared_at >= since))
        .order_by(Incident.id.desc()).limit(LIST_LIMIT)
    )).scalars().all()
    if not rows:
        return Reply("No open incidents, and none in the last 30 days.")
    lines = []
    for i in rows:
        view = _view(ctx, i)
        state = Text(f"{i.status}, {view['duration']}", Text(", commander ", User(i.commander, ping=False))
                     if i.commander else "")
        lines.append(Text(f"#{i.id} [{i.severity}] {i.stage}: ", clip(i.summary, LIST_SUMMARY_CHARS), " — ", state,
                          " (in ", Channel(i.channel), ")"))
    open_count = sum(1 for i in rows if i.status != "resolved")
    url = links.signed_url(ctx.settings, service.page_path(), ctx.now)
    more = Text(Link(url, "incidents page")) if url else None
    return Reply(f"{open_count} open incident{'s' if open_count != 1 else ''}; latest {len(rows)} shown", lines=lines,
                 footer=Text("All incidents: ", more) if more and len(rows) >= LIST_LIMIT else None, more=more)


@commands.command("incident stats", summary="mean time to acknowledge and to resolve per severity, last 30 days",
                  role=Role.viewer)
async def stats(ctx: Context, args: dict) -> Reply:
    since = ctx.now - STATS_WINDOW
    rows = (await ctx.session.execute(select(Incident).where(Incident.detected_at >= since))).scalars().all()
    fields = []
    for sev in ("P1", "P2", "P3"):
        mine = [i for i in rows if i.severity == sev]
        acks = [(i.acknowledged_at - i.detected_at) for i in mine if i.acknowledged_at]
        fixes = [(i.resolved_at - i.detected_at) for i in mine if i.resolved_at]
        clocks = ctx.settings.cfg.severity[sev]
        mtta = format_duration(sum(acks, timedelta()) / len(acks)) if acks else "—"
        mttr = format_duration(sum(fixes, timedelta()) / len(fixes)) if fixes else "—"
        fields.append((sev, f"{len(mine)} incident{'s' if len(mine) != 1 else ''}: MTTA {mtta} "
                            f"(target {format_duration(clocks.ack)}), MTTR {mttr} "
                            f"(target {format_duration(clocks.resolve)}); {len(mine) - len(fixes)} open"))
    return Reply(f"Incident stats, last 30 days ({len(rows)} incidents)", fields=fields,
                 footer="MTTA: detection to acknowledgement; MTTR: detection to resolution.")


# --- alert card buttons --------------------------------------------------------------------------------------


async def _alert(ctx: Context, value: str) -> Alert:
    alert_id = as_id(value)
    if alert_id is None:
        raise UsageError("this alert button has no alert id")
    alert = (await ctx.session.execute(
        select(Alert).where(Alert.id == alert_id).with_for_update())).scalar_one_or_none()
    if alert is None:
        raise NotFound(f"Alert {value[:12]} no longer exists.")
    return alert


def _alert_card(ctx: Context, alert: Alert, state: str, incident: Incident | None = None) -> Reply:
    reply = alert_card(ctx.settings, alert, state, actor=ctx.actor, incident=incident, now=ctx.now)
    reply.replace = True
    return reply


@commands.action("alert_ack", role=Role.responder)
async def alert_ack(ctx: Context, value: str) -> Reply:
    alert = await _alert(ctx, value)
    if alert.status != "open":
        who = Text(" by ", User(alert.acknowledged_by)) if alert.acknowledged_by else ""
        raise Conflict(Text(f"This alert was already {alert.status}", who, "."))
    alert.status = "acknowledged"
    alert.acknowledged_by = ctx.actor
    alert.acknowledged_at = ctx.now
    ctx.note(subject=f"alert:{alert.id}", detail="acknowledged")
    return _alert_card(ctx, alert, "acknowledged")


@commands.action("alert_declare", role=Role.responder)
async def alert_declare(ctx: Context, value: str) -> Reply:
    alert = await _alert(ctx, value)
    if alert.incident_id is not None:
        raise Conflict(f"Incident #{alert.incident_id} was already declared from this alert.")
    channel = ctx.settings.cfg.slack.incident_channel or ctx.channel or ctx.settings.cfg.slack.alerts_channel
    if not channel:
        raise UsageError("set [slack] incident_channel so alert incidents have a channel")
    figures = {"baseline": alert.baseline_mean, "current": alert.current, "traffic": alert.traffic_per_hour,
               "aov": alert.aov}
    figures = {k: v for k, v in figures.items() if v is not None}
    if not (0 <= alert.baseline_mean <= 1 and 0 <= alert.current <= 1):
        figures = {}  # not a rate: the revenue formula does not apply
    summary = f"{alert.metric} {alert.current:g} vs baseline {alert.baseline_mean:g} ({alert.sigma:.1f}σ)"
    incident = await service.declare(ctx.session, ctx.settings, channel=channel, actor=ctx.actor,
                                     severity=alert.severity, stage=alert.stage, summary=summary, figures=figures,
                                     now=ctx.now, detected_at=alert.received_at, alert_id=alert.id)
    incident.escalation_level = alert.escalation_level
    _entry(ctx, incident, "declare", f"Declared {alert.severity} from alert {alert.id} (received "
           f"{alert.received_at:%H:%M:%S} UTC, {alert.sigma:.1f}σ): {summary}", alert_id=alert.id, impact=figures)
    if alert.acknowledged_at is not None:
        incident.acknowledged_at = alert.acknowledged_at
        incident.commander = alert.acknowledged_by
        incident.status = "acknowledged"
        _entry(ctx, incident, "ack", f"Acknowledged on the alert by @{alert.acknowledged_by}; incident commander")
    await service.schedule_escalation(ctx.session, ctx.settings, incident)
    alert.status = "declared"
    alert.incident_id = incident.id
    link = service.page_link(ctx.settings, incident.id, ctx.now)
    if channels.wants_own_channel(ctx.settings, None):
        await channels.request_channel(ctx.session, incident, ctx.now)
    else:
        ctx.post(channel, render_reply(ctx.settings, f"initial_{incident.severity.lower()}.md",
                                       incident=_view(ctx, incident), link=link, now=fmt_time(ctx.now)),
                 ref=f"incident:{incident.id}:initial")
    if incident.commander:
        _brief(ctx, incident, "commander", incident.commander)
    ctx.note(subject=f"incident:{incident.id}", detail=f"declared from alert {alert.id}")
    return _alert_card(ctx, alert, "declared", incident)


# --- the update reminder's Snooze buttons (issue 19 item 6) -------------------------------------------------


@commands.action("snooze", role=Role.responder)
@_in_words
async def snooze(ctx: Context, value: str) -> Reply:
    number, _, span = (value or "").partition(" ")
    incident_id = as_id(number)
    if incident_id is None or span not in SNOOZES:
        raise UsageError("this Snooze button names no incident and span (30m or 1h)")
    incident = await _target(ctx, incident_id, doing="snooze", lock=True)
    service.require_open(incident, "snoozed")
    due = await snooze_reminder(ctx.session, incident.id, SNOOZES[span], ctx.now)
    if due is None:
        raise Conflict(f"Incident #{incident.id} has no update reminder to snooze.")
    _entry(ctx, incident, "snooze", f"Reminders snoozed for {span} by @{ctx.actor}; next reminder at {due:%H:%M} UTC",
           span=span, until=due.isoformat())
    ctx.note(subject=f"incident:{incident.id}", detail=f"reminders snoozed for {span}", span=span)
    return Reply(f"Reminders of incident #{incident.id} snoozed for {span}: the next one is due at {due:%H:%M} UTC.")
