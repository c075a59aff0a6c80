"""An incident's own channel (issue 19 item 5): `incident declare … --channel new`, or every
incident with `[incidents] channel_per_incident = true`.

How it fits the one path: the declare commits the incident (its state "requested") and a job of
the one scheduler, `incident_channel`, due at once. The job runs after its claim commits
(`after_claim`: no transaction open while Slack is called), so the declare answers inside Slack's
3 s and the Slack calls happen in the worker: `conversations.create` `#inc-<number>-<stage>` (a
suffix when the name is taken), `conversations.invite` the declarer and the role holders,
`conversations.setTopic` severity, stage and summary. Then ONE transaction moves the incident to
its channel (`channel` and `open_channel` name it: every later post goes there and commands typed
there find it; the main channel is free for another incident), queues the initial communication
there and a one-line pointer in the main channel. A creation Slack refuses (missing scope,
`restricted_action`…) leaves the incident where it was declared: the initial communication and a
warning in words go to the main channel, in one transaction too — nothing half-done. A retryable
failure (429, 5xx, the network) is tried again `RETRY_EVERY` later, `CREATE_TRIES` times; so is a
run a crash interrupted (the job stays active until its outcome is committed).

A job rather than an outbox kind: the outbox paces and orders posts per channel, a channel's
creation has no channel yet, and what follows it (moving the incident, the posts) is the
incidents family's, not the core's. A new severity sets the topic again (`incident_channel_topic`,
a one-shot job). People given a role later are invited by a one-shot job
(`incident_channel_invite`); resolving schedules `incident_archive` after `[incidents]
archive_after` (off by default). Slack is reached through `services.extras["conversations"]`
(bot/slack/conversations.py, attached by the family's setup): this module knows no Slack.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import NotFound, UsageError
from ..models import ScheduledJob
from ..outbox import PERMANENT, RETRY, SendError, enqueue
from ..reply import Reply
from ..scheduler import JobKind, JobRun, stop_jobs, upsert_job
from ..services import Services
from ..settings import Settings
from ..templating import render_reply
from ..text import Channel, Code, Em, Icon, Text, User, clip, join
from . import service
from .models import ROLES, Incident
from .views import fmt_time, incident_view

log = logging.getLogger("revops.incidents.channels")

CREATE_JOB, INVITE_JOB, ARCHIVE_JOB = "incident_channel", "incident_channel_invite", "incident_archive"
TOPIC_JOB = "incident_channel_topic"
RETRY_EVERY = timedelta(seconds=30)  # a creation Slack could not answer is tried again this much later
# While a run talks to Slack its job is not due again before this (a lease: another worker does not
# create a second channel meanwhile; a run that crashed is taken up again after it).
CREATE_LEASE = timedelta(minutes=10)
CREATE_TRIES = 3  # runs of the creation job before a retryable failure falls back to the main channel
ARCHIVE_TRIES = 3
NAME_SUFFIXES = 9  # #inc-7-checkout taken: #inc-7-checkout-2 … -9
MAX_NAME = 80  # Slack's limit on a channel name
TOPIC_CHARS = 250  # Slack's limit on a topic (`too_long` past it)
SUMMARY_CHARS = 300  # of the summary in the pointer
IGNORED_INVITE_ERRORS = ("already_in_channel", "cant_invite_self")


class Conversations(Protocol):
    """What the Slack adapter offers (bot/slack/conversations.py); each raises `SendError`."""

    async def create(self, name: str) -> str: ...

    async def invite(self, channel: str, users: list[str]) -> None: ...

    async def set_topic(self, channel: str, topic: str) -> None: ...

    async def archive(self, channel: str) -> None: ...


# --- what the declare asks -------------------------------------------------------------------------------


def wants_own_channel(settings: Settings, flag: str | None) -> bool:
    """`--channel new` (its own channel), `--channel here` (the channel it was declared in), or the
    `[incidents] channel_per_incident` setting when not said."""
    if flag is None:
        return settings.cfg.incidents.channel_per_incident
    value = flag.strip().lower()
    if value == "new":
        return True
    if value in ("here", "main"):
        return False
    raise UsageError(Text(Code("--channel"), " takes ", Code("new"), " (the incident's own channel) or ",
                          Code("here"), ", got ", Code(clip(flag, 30))))


def channel_name(incident_id: int, stage: str, suffix: int | None = None) -> str:
    """`inc-<number>-<stage>` as Slack takes it: lowercase letters, digits, `-` and `_`, ≤ 80 chars."""
    ascii_stage = unicodedata.normalize("NFKD", stage).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_-]+", "-", ascii_stage.lower())
    slug = re.sub(r"[-_]{2,}", "-", slug).strip("-_")
    base, tail = f"inc-{incident_id}", f"-{suffix}" if suffix else ""
    slug = slug[:max(MAX_NAME - len(base) - len(tail) - 1, 0)].rstrip("-_")
    return f"{base}-{slug}{tail}" if slug else f"{base}{tail}"


def topic_of(incident: Incident) -> str:
    """Severity, stage and summary, one plain line within Slack's 250 characters. Slack does not read
    markup in a topic; the summary is a person's text all the same, so `<` `>` (what Slack's tokens
    are made of) become look-alikes and it never turns into a mention or a link anywhere."""
    line = " ".join(f"{incident.severity} · {incident.stage}: {incident.summary}".split())
    line = line.replace("<", "‹").replace(">", "›")
    return str.__str__(str(clip(line, TOPIC_CHARS)))


def members_of(incident: Incident) -> list[str]:
    """Who is invited: the declarer and the role holders, once each."""
    people = [incident.declared_by, *(getattr(incident, role) for role in ROLES)]
    return list(dict.fromkeys(p for p in people if p and p != service.BOT))


async def request_channel(session: AsyncSession, incident: Incident, now: datetime) -> None:
    """In the declare's transaction: the incident will get its own channel (the job makes it)."""
    incident.own_channel_state = "requested"
    incident.home_channel = incident.channel
    await upsert_job(session, key=f"incident:{incident.id}:channel", kind=CREATE_JOB, due_at=now,
                     every=RETRY_EVERY, incident_id=incident.id)


async def invite_later(session: AsyncSession, incident: Incident, user: str, now: datetime) -> None:
    """Someone given a role (or acknowledging) joins the incident's own channel, if it has one."""
    if incident.own_channel_state != "ready" or not incident.own_channel or incident.status == "resolved":
        return  # no channel (yet: the creation job invites the role holders it finds)
    await upsert_job(session, key=f"incident:{incident.id}:invite:{user}", kind=INVITE_JOB, due_at=now,
                     incident_id=incident.id, data={"user": user})


async def retopic_later(session: AsyncSession, incident: Incident, now: datetime) -> None:
    """The severity changed: the incident's own channel gets the topic that says so (the job calls
    Slack after this transaction commits)."""
    if incident.own_channel_state != "ready" or not incident.own_channel or incident.status == "resolved":
        return  # no channel yet: the creation job sets the topic it finds then
    await upsert_job(session, key=f"incident:{incident.id}:topic", kind=TOPIC_JOB, due_at=now,
                     incident_id=incident.id)


async def schedule_archive(session: AsyncSession, settings: Settings, incident: Incident, now: datetime) -> None:
    """After the resolve: archive the incident's own channel `[incidents] archive_after` later."""
    after = settings.cfg.incidents.archive_after
    if after is None or incident.own_channel_state != "ready" or not incident.own_channel:
        return
    await upsert_job(session, key=f"incident:{incident.id}:archive", kind=ARCHIVE_JOB, due_at=now + after,
                     incident_id=incident.id, data={"tries": 0})


# --- the jobs ----------------------------------------------------------------------------------------------


def _conversations(services: Services) -> Conversations | None:
    return services.extras.get("conversations")


async def _read(services: Services, incident_id: int | None) -> Incident | None:
    if incident_id is None:
        return None
    async with services.db.reading() as session:
        return await session.get(Incident, incident_id)


async def _locked(session: AsyncSession, incident_id: int) -> Incident | None:
    return (await session.execute(select(Incident).where(Incident.id == incident_id).with_for_update())
            ).scalar_one_or_none()


def _why(exc: SendError) -> str:
    """A refusal of Slack's in words (its code kept: it is what an admin searches for)."""
    if exc.code == "missing_scope":
        return "Slack said missing_scope: the app needs the channels:manage scope (reinstall it from manifest.json)"
    if exc.code == "restricted_action":
        return "Slack said restricted_action: this workspace does not let the app create channels"
    if exc.code == "name_taken":
        return f"Slack said name_taken for every name tried (up to {NAME_SUFFIXES} suffixes)"
    if exc.action == RETRY:
        return f"Slack did not take it after {CREATE_TRIES} tries ({exc})"
    return str(exc)


async def _create(conversations: Conversations, incident: Incident) -> tuple[str, str]:
    """The new channel's (id, name); a taken name gets the next suffix."""
    for suffix in (None, *range(2, NAME_SUFFIXES + 1)):
        name = channel_name(incident.id, incident.stage, suffix)
        try:
            return await conversations.create(name), name
        except SendError as exc:
            if exc.code != "name_taken":
                raise
    raise SendError("Slack said name_taken", action=PERMANENT, code="name_taken")


async def create_channel(run: JobRun) -> None:
    services, job = run.services, run.job
    incident = await _read(services, job.incident_id)
    if incident is None or incident.status == "resolved" or incident.own_channel_state != "requested":
        async with services.db.transaction() as session:
            await stop_jobs(session, key=job.key)
        return
    conversations = _conversations(services)
    if conversations is None:
        return await _fall_back(services, incident.id, job.key, "there is no Slack connection (SLACK_BOT_TOKEN is not set)")
    await _due_again(services, job.key, CREATE_LEASE)
    try:
        channel, name = await _create(conversations, incident)
    except SendError as exc:
        if exc.action == RETRY and (job.runs or 0) < CREATE_TRIES:
            log.info("incident %s: creating its channel failed (%s); trying again later", incident.id, exc.code)
            return await _due_again(services, job.key, RETRY_EVERY)  # the job stays active
        return await _fall_back(services, incident.id, job.key, _why(exc))
    warnings: list[Text] = []
    invited: list[str] = []
    for user in members_of(incident):
        try:
            await conversations.invite(channel, [user])
            invited.append(user)
        except SendError as exc:
            if exc.code in IGNORED_INVITE_ERRORS:
                invited.append(user)
            else:
                warnings.append(Text("Could not invite ", User(user), f" to this channel ({exc}); invite them by hand."))
    try:
        await conversations.set_topic(channel, topic_of(incident))
    except SendError as exc:
        warnings.append(Text(f"Could not set this channel's topic ({exc})."))
    await _moved(services, incident.id, job.key, channel, name, invited, warnings)


async def _due_again(services: Services, key: str, after: timedelta) -> None:
    async with services.db.transaction() as session:
        await session.execute(update(ScheduledJob).where(ScheduledJob.key == key, ScheduledJob.status == "active")
                              .values(due_at=services.clock.now() + after))


async def _moved(services: Services, incident_id: int, key: str, channel: str, name: str, invited: list[str],
                 warnings: list[Text]) -> None:
    """The channel exists: the incident moves to it, its initial communication goes there, and the
    main channel gets the pointer — one transaction."""
    now = services.clock.now()
    async with services.db.transaction() as session:
        incident = await _locked(session, incident_id)
        await stop_jobs(session, key=key)
        if incident is None:
            return
        incident.own_channel = channel
        who = ", ".join(f"@{u}" for u in invited) or "nobody"
        if incident.status == "resolved" or incident.own_channel_state != "requested":
            # resolved while the channel was being made: kept on record, archived per the settings
            incident.own_channel_state = "ready"
            await service.write_entry(session, incident.id, at=now, kind="channel", actor=service.BOT,
                                      text=f"Own channel #{name} created after the incident was resolved",
                                      data={"channel": channel, "name": name})
            await schedule_archive(session, services.settings, incident, now)
            return
        home = incident.channel
        incident.channel = incident.open_channel = channel
        incident.own_channel_state = "ready"
        await service.write_entry(session, incident.id, at=now, kind="channel", actor=service.BOT,
                                  text=f"Own channel #{name} created; invited {who}"
                                  + (f" ({len(warnings)} warning(s) posted there)" if warnings else ""),
                                  data={"channel": channel, "name": name, "invited": invited, "home": home})
        author = incident.declared_by
        await enqueue(session, channel=channel, reply=_initial(services.settings, incident, now), at=now,
                      ref=f"incident:{incident.id}:initial", author=author, origin_channel=home)
        pointer = Reply(Text(Icon("rotating_light"), " ", Em(f"Incident #{incident.id}"),
                             f" ({incident.severity}, {incident.stage}): ", clip(incident.summary, SUMMARY_CHARS),
                             " — it is handled in its own channel ", Channel(channel), "."), private=False)
        await enqueue(session, channel=home, reply=pointer, at=now, ref=f"incident:{incident.id}:pointer",
                      author=author)
        for warning in warnings:
            await enqueue(session, channel=channel, reply=Reply(Text(Icon("warning"), " ", warning), private=False),
                          at=now, author=author)


async def _fall_back(services: Services, incident_id: int, key: str, why: str) -> None:
    """No channel: the incident runs where it was declared, which is told why, with its initial
    communication — one transaction."""
    now = services.clock.now()
    async with services.db.transaction() as session:
        incident = await _locked(session, incident_id)
        await stop_jobs(session, key=key)
        if incident is None or incident.status == "resolved" or incident.own_channel_state != "requested":
            return
        incident.own_channel_state = "failed"
        await service.write_entry(session, incident.id, at=now, kind="channel", actor=service.BOT,
                                  text=f"No own channel: {why}. The incident runs in the channel it was declared in",
                                  data={"error": why[:300]})
        author = incident.declared_by
        await enqueue(session, channel=incident.channel, reply=_initial(services.settings, incident, now), at=now,
                      ref=f"incident:{incident.id}:initial", author=author)
        warning = Text(Icon("warning"), " ", Em(f"Incident #{incident.id} could not get its own channel"), f": {why}. "
                       "It runs here, in ", Channel(incident.channel), "; every post of it comes here.")
        await enqueue(session, channel=incident.channel, reply=Reply(warning, private=False), at=now, author=author)


def _initial(settings: Settings, incident: Incident, now: datetime) -> Reply:
    return render_reply(settings, f"initial_{incident.severity.lower()}.md",
                        incident=incident_view(incident, settings, now),
                        link=service.page_link(settings, incident.id, now), now=fmt_time(now))


async def invite_member(run: JobRun) -> None:
    services, job = run.services, run.job
    user = (job.data or {}).get("user")
    incident = await _read(services, job.incident_id)
    conversations = _conversations(services)
    if not user or incident is None or incident.own_channel_state != "ready" or not incident.own_channel \
            or conversations is None:
        return
    channel = incident.own_channel
    try:
        await conversations.invite(channel, [user])
        problem = None
    except SendError as exc:
        problem = None if exc.code in IGNORED_INVITE_ERRORS else exc
    now = services.clock.now()
    async with services.db.transaction() as session:
        text = f"Invited @{user} to the incident's channel" if problem is None else \
            f"Could not invite @{user} to the incident's channel ({problem})"
        await service.write_entry(session, incident.id, at=now, kind="channel", actor=service.BOT, text=text,
                                  data={"channel": channel, "user": user, "error": problem.code if problem else None})
        if problem is not None:
            await enqueue(session, channel=channel, at=now, author=incident.commander or incident.declared_by,
                          reply=Reply(Text(Icon("warning"), " Could not invite ", User(user),
                                           f" to this channel ({problem}); invite them by hand."), private=False))


async def set_topic(run: JobRun) -> None:
    """The incident's own channel's topic, as the incident reads now (severity, stage, summary)."""
    services, job = run.services, run.job
    incident = await _read(services, job.incident_id)
    conversations = _conversations(services)
    if incident is None or incident.own_channel_state != "ready" or not incident.own_channel \
            or conversations is None:
        return
    try:
        await conversations.set_topic(incident.own_channel, topic_of(incident))
    except SendError as exc:
        async with services.db.transaction() as session:
            await service.write_entry(session, incident.id, at=services.clock.now(), kind="channel",
                                      actor=service.BOT, text=f"Could not set the channel's topic ({exc})",
                                      data={"channel": incident.own_channel, "error": exc.code})


async def archive_channel(run: JobRun) -> None:
    services, job = run.services, run.job
    incident = await _read(services, job.incident_id)
    if incident is None or incident.own_channel_state != "ready" or not incident.own_channel:
        return
    conversations = _conversations(services)
    problem: SendError | None = None
    if conversations is None:
        problem = SendError("there is no Slack connection", action=PERMANENT, code="no_connection")
    else:
        try:
            await conversations.archive(incident.own_channel)
        except SendError as exc:
            problem = None if exc.code == "already_archived" else exc
    now = services.clock.now()
    tries = int((job.data or {}).get("tries") or 0) + 1
    async with services.db.transaction() as session:
        locked = await _locked(session, incident.id)
        if locked is None:
            return
        if problem is None:
            locked.own_channel_state = "archived"
            locked.archived_at = now
            await service.write_entry(session, locked.id, at=now, kind="channel", actor=service.BOT,
                                      text="Archived the incident's own channel",
                                      data={"channel": locked.own_channel})
            return
        if problem.action == RETRY and tries < ARCHIVE_TRIES:
            await upsert_job(session, key=job.key, kind=ARCHIVE_JOB, due_at=now + RETRY_EVERY,
                             incident_id=locked.id, data={"tries": tries})
            return
        await service.write_entry(session, locked.id, at=now, kind="channel", actor=service.BOT,
                                  text=f"Could not archive the incident's own channel ({problem})",
                                  data={"channel": locked.own_channel, "error": problem.code})
        await enqueue(session, channel=locked.own_channel, at=now, author=locked.commander or locked.declared_by,
                      reply=Reply(Text(Icon("warning"), f" Could not archive this channel ({problem}); "
                                       "archive it by hand when you are done."), private=False))


async def say_where_it_moved(session: AsyncSession, channel: str | None) -> None:
    """A command typed in a main channel whose incident now runs in its own channel: NotFound saying where."""
    if not channel:
        return
    moved = (await session.execute(
        select(Incident.id, Incident.own_channel).where(Incident.home_channel == channel, Incident.status != "resolved",
                                                        Incident.own_channel_state == "ready")
        .order_by(Incident.id.desc()).limit(3))).all()
    if moved:
        where = join(", ", [Text(f"#{number} in ", Channel(own)) for number, own in moved])
        raise NotFound(Text("There is no open incident in this channel; declared here and running in its own "
                            "channel: ", where, ". Type the command there, or name the incident with #ID."))


def pending_words(incident: Incident) -> Text:
    """What the declare says while the channel is being made."""
    return Text(" Its own channel ", Code(f"#{channel_name(incident.id, incident.stage)}"),
                " is being created: the initial communication goes there, with a pointer in ",
                Channel(incident.channel), ".")


def attach(services: Services, conversations: Conversations | None) -> None:
    """The family's setup: the Slack channels the jobs use (None: no Slack; the jobs fall back)."""
    services.extras.setdefault("conversations", conversations)


CHANNEL_JOBS = (
    # Slack is called after the claim commits: no transaction open while it is waited on.
    JobKind(CREATE_JOB, create_channel, after_claim=True, lock_first=service.lock_incident),
    JobKind(INVITE_JOB, invite_member, after_claim=True, lock_first=service.lock_incident),
    JobKind(ARCHIVE_JOB, archive_channel, after_claim=True, lock_first=service.lock_incident),
    JobKind(TOPIC_JOB, set_topic, after_claim=True, lock_first=service.lock_incident),
)
