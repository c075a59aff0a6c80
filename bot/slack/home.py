"""The App Home tab (issue 19 item 2): what waits for each person, published per user.

On `app_home_opened` (the Home tab) the person is remembered (`home_viewers`, migration 0020) and
their home is published with `views.publish`: their role, the dry-run and panic flags, then the
sections the families declare (`Family.home`, bot/family.py) — open incidents with their clocks,
credit and invoice requests waiting for a decision, failed Stripe events. A section is shown only
to a person whose role may run the command that shows the same thing (`HomeSection.reads`), and a
button only to one whose role may click it (the registry's action role); the families leave out
Approve / Reject for the requester themselves (four eyes). The buttons are the families' own
action ids, so a click goes through the router (roles, dry-run, audit) exactly as in a channel.

When the data changes the homes are published again: every action that changes things reaches
the router's recording point (a `Recorder` here, which writes nothing), and every commit that
queued posts calls `services.on_posts` (the router's actions, and the jobs that expire requests);
either schedules ONE refresh after `DEBOUNCE` seconds, so a burst of actions is one publish per
person. A refresh publishes, one after another, to the people who opened their home in the last
`RECENT` (at most `FANOUT`, the latest first): someone who opens it later gets a fresh one then. A
change arriving while a refresh runs makes one more pass after it. Slack is never called inside a
unit of work: the homes are read in a read unit, then published.

A job's posts (cadence updates come every few seconds while incidents are open) start a refresh
at most every `MIN_GAP` seconds, so the homes follow the jobs without spending Slack's
views.publish budget; a person's action waits only the debounce. `revops worker` runs its own
refresher (`attach`, bot/cli.py), so what a worker changes — a request that expires — reaches
the homes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ..flags import read_flags
from ..models import Base
from ..reply import Reply
from ..roles import Role, role_of
from ..services import Recorder, Services
from ..text import Code, Em, Icon, Text
from .blocks import context, render_blocks
from .client import classify

log = logging.getLogger("revops.slack.home")

DEBOUNCE = 0.5  # seconds a refresh waits for the rest of a burst (and for its commit)
RECENT = timedelta(hours=24)  # who opened their home this recently is published to again
FANOUT = 50  # at most this many homes per refresh
MIN_GAP = 5.0  # seconds from one refresh to the next when a job's posts start it
FORGET = timedelta(days=7)  # viewers not seen for this long are forgotten
MAX_BLOCKS = 100  # Slack's limit for a Home tab view


class HomeViewer(Base):
    """Who opened their App Home, and when last (the refresh publishes to them again)."""

    __tablename__ = "home_viewers"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    opened_at: Mapped[datetime] = mapped_column(index=True)


def header(role: Role, flags) -> Reply:
    """The viewer's role and the two flags."""
    def state(on: bool) -> Text:
        return Text(Em("on" if on else "off"))

    lines = []
    if flags.dry_run:
        lines.append(Text(Icon("test_tube"), " Dry-run is on: mutating actions are simulated and change nothing."))
    if flags.panic:
        lines.append(Text(Icon("rotating_light"), " Panic is on: automation is paused."))
    return Reply(Text(Icon("house"), " ", Em("revops"), f" — you are {role}"),
                 fields=[("Dry-run", state(flags.dry_run)), ("Panic", state(flags.panic))], lines=lines,
                 footer=Text(Code("/revops help"), " lists the commands your role may run."))


class Home:
    def __init__(self, services: Services, client, followups):
        self.services = services
        self.client = client
        self.followups = followups
        self.debounce = DEBOUNCE
        self.min_gap = MIN_GAP
        self._due: float | None = None  # when (monotonic) the waiting refresh runs; None: none waits
        self._wake = asyncio.Event()  # the waiting refresh's time moved earlier
        self._last = -1e9  # when the last refresh finished
        self._running = False
        self._again = False  # a person's change arrived while a refresh ran
        self._job_after = False  # a job's change arrived while a refresh ran

    # --- what a person sees ---------------------------------------------------------------------
    def _role_needed(self, command_name: str) -> Role | None:
        for command in self.services.registry.commands:
            if command.name == command_name:
                return command.role_for({})
        return None

    def _allowed(self, reply: Reply, role: Role) -> Reply:
        """The reply without the buttons this role may not click."""
        actions = self.services.registry.actions
        reply.buttons = [b for b in reply.buttons if (a := actions.get(b.action)) is not None and role >= a.role]
        return reply

    async def build(self, user: str) -> list[list[Reply]]:
        """The person's home: groups of neutral replies (the header, then each family section)."""
        settings = self.services.settings
        role = role_of(settings.cfg.roles, user)
        now = self.services.clock.now()
        groups: list[list[Reply]] = []
        async with self.services.db.reading() as session:
            groups.append([header(role, await read_flags(session))])
            for section in self.services.extras.get("home_sections", []):
                needed = self._role_needed(section.reads)
                if needed is None or role < needed:
                    continue
                try:
                    replies = await section.build(session, user, role, now, settings)
                except Exception:
                    log.exception("a home section (%s) could not be read", section.reads)
                    replies = [Reply(Text(Icon("warning"), " This part could not be read just now: ",
                                          Code(f"/revops {section.reads}"), " shows it."))]
                groups.append([self._allowed(r, role) for r in replies])
        return groups

    @staticmethod
    def view(groups: list[list[Reply]], names: dict[str, str] | None = None) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = []
        for i, group in enumerate(groups):
            rendered: list[dict[str, Any]] = [{"type": "divider"}] if i else []
            for reply in group:
                rendered += render_blocks(reply, names)
            if len(blocks) + len(rendered) > MAX_BLOCKS - 1:
                blocks.append(context("More than the Home tab can hold: the commands show the rest."))
                break
            blocks += rendered
        _unique_action_ids(blocks)
        return {"type": "home", "blocks": blocks}

    async def publish(self, user: str) -> bool:
        groups = await self.build(user)
        resolver = self.services.extras.get("names")
        names = {}
        if resolver is not None:
            names = await resolver.resolve({u for group in groups for r in group for u in r.users(quiet_only=True)})
        try:
            await self.client.views_publish(user_id=user, view=self.view(groups, names))
        except Exception as exc:
            log.warning("views.publish for %s failed: %s", user, classify(exc))
            return False
        return True

    # --- who opened it ----------------------------------------------------------------------------
    async def opened(self, user: str) -> None:
        now = self.services.clock.now()
        try:
            async with self.services.db.transaction() as session:
                row = await session.get(HomeViewer, user)
                if row is None:
                    session.add(HomeViewer(user_id=user, opened_at=now))
                else:
                    row.opened_at = now
                await session.execute(delete(HomeViewer).where(HomeViewer.opened_at < now - FORGET))
        except IntegrityError:
            pass  # opened twice at once: the other one remembered it
        await self.publish(user)

    async def viewers(self) -> list[str]:
        since = self.services.clock.now() - RECENT
        async with self.services.db.reading() as session:
            rows = await session.execute(select(HomeViewer.user_id).where(HomeViewer.opened_at >= since)
                                         .order_by(HomeViewer.opened_at.desc()).limit(FANOUT))
            return [user for (user,) in rows.all()]

    # --- when the data changes --------------------------------------------------------------------
    def changed(self, by_job: bool = False) -> None:
        """Something the homes show may have changed: one refresh soon (debounced; when `by_job`,
        not sooner than `min_gap` after the last one)."""
        if self._running:  # one more pass after this one: at once for a person, after the gap for a job
            self._again = self._again or not by_job
            self._job_after = self._job_after or by_job
            return
        now = time.monotonic()
        delay = max(self.debounce, self._last + self.min_gap - now) if by_job else self.debounce
        due = now + delay
        if self._due is not None:
            if due < self._due:
                self._due = due
                self._wake.set()  # the waiting refresh runs earlier
            return
        self._due = due
        self.followups.start(self._refresh())

    def job_posted(self) -> None:
        """`services.on_posts`: a commit queued posts (an action's, or a job's)."""
        self.changed(by_job=True)

    async def _refresh(self) -> None:
        while self._due is not None and (left := self._due - time.monotonic()) > 0:
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=left)
        self._due = None
        self._running = True
        try:
            while True:
                self._again = False
                for user in await self.viewers():
                    await self.publish(user)
                if not self._again:
                    break
        except Exception:
            log.exception("refreshing the App Homes failed")
        finally:
            self._running = False
            self._last = time.monotonic()
            if self._job_after:
                self._job_after = False
                self.changed(by_job=True)

    async def noted(self, session, record) -> None:
        # At the router's recording point, inside the action's unit of work: nothing is written and
        # nothing is called; the refresh runs after the debounce, outside it.
        self.changed()


def _unique_action_ids(blocks: list[dict[str, Any]]) -> None:
    """A view's action ids unique across its blocks: a second button of the same action gets "~N"
    (the registry reads the action without it, as it does for a message's)."""
    seen: dict[str, int] = {}
    for block in blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            base = element["action_id"].split("~", 1)[0]
            seen[base] = seen.get(base, 0) + 1
            element["action_id"] = base if seen[base] == 1 else f"{base}~{seen[base]}"


def attach(services: Services, client, followups) -> Home:
    """The process's refresher of the homes (one per Services), publishing with `client`; its
    refreshes run as `followups`, which the process drains before it stops."""
    home = services.extras.get("home")
    if home is None:
        home = Home(services, client, followups)
        services.extras["home"] = home
        services.recorders.append(Recorder(home.noted, lambda record: record.mutating))
        services.on_posts.append(home.job_posted)
    home.client, home.followups = client, followups  # (a rebuilt Slack app's)
    return home


def register(app, services: Services, router, followups, client) -> Home:
    home = attach(services, client, followups)

    @app.event("app_home_opened")
    async def on_home_opened(event):
        # bolt acknowledges events itself; the home is published right after.
        if event.get("tab", "home") == "home" and event.get("user"):
            followups.start(home.opened(event["user"]))

    return home
