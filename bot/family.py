"""What a family adds to the bot, declared in one place and read by the composition root.

A family (billing, grants, incidents, health, flags, audit, help...) is a folder under
`bot/` (models, service, jobs, routes, demo data) plus its command modules under
`commands/`. Its registration — `bot/<family>/family.py`, or for a family that is only
commands over the core, the `family` at the end of its command module — is ONE `Family`:

    family = Family(
        "incidents",
        commands=(incident.commands, impact.commands),   # commands and button actions
        recorders=(Recorder(record_action, may_record),),  # the router's recording point
        jobs=INCIDENT_JOBS,                               # JobKinds for the one scheduler
        routes=(web.router,),                             # FastAPI routers
        seeders=(seed_incidents,), tour=INCIDENT_TOUR,    # `revops console --demo`
        templates=sample_contexts,                        # template name -> sample context
        home=(HomeSection(open_incidents, reads="incident list"),),  # the App Home's part
    )

A family whose endpoint carries load declares it as an `Endpoint` (`endpoints=`), served
around FastAPI's routing (bot/web/direct.py): billing's `POST /webhooks/stripe`.

The composition root (bot/app.py) imports every registration and hands them to
`Families`, which builds the registry, the Services, the scheduler, the HTTP routes, the
demo and the CLI's extra sub-commands. Nothing else imports a registration, and the core
imports no family at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping

from .clock import Clock
from .db import Database
from .pins import PinKeeper
from .registry import CommandSet, Registry
from .scheduler import JobKind, Scheduler
from .services import Recorder, Services, TemplateSamples
from .settings import Settings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from .web.direct import Endpoint

Seeder = Callable[[Services], Awaitable[None]]


@dataclass(frozen=True)
class HomeSection:
    """A part of the App Home a family declares: `build(session, user, role, now, settings)` returns
    neutral Replies (bot/reply.py; their buttons are the family's own actions). Shown only to whoever
    may run `reads` (the command that shows the same thing), and a button only to whoever may click it;
    the Slack adapter (bot/slack/home.py) renders and publishes it."""

    build: Callable[..., Awaitable[list[Any]]]
    reads: str  # e.g. "grant pending"
    place: int = 50  # lower first: incidents 10, requests waiting 20-30, Stripe events 40


@dataclass(frozen=True)
class CliCommand:
    """A `revops <name>` sub-command a family adds; `run(services)` returns the exit code."""

    name: str
    help: str
    run: Callable[[Services], int]


@dataclass(frozen=True)
class Family:
    name: str
    commands: tuple[CommandSet, ...] = ()
    recorders: tuple[Recorder, ...] = ()
    jobs: tuple[JobKind, ...] = ()
    routes: tuple["APIRouter", ...] = ()
    # The few endpoints that carry load, served around FastAPI's routing (bot/web/direct.py).
    endpoints: tuple["Endpoint", ...] = ()
    seeders: tuple[Seeder, ...] = ()
    tour: tuple[tuple[str, str], ...] = ()  # (user, console line) pairs of the demo tour
    templates: TemplateSamples | None = None
    setup: Callable[[Services], None] | None = None  # attach what the family's code needs on Services
    cli: tuple[CliCommand, ...] = ()
    # Hooks called when Slack refuses a post for good (bot/outbox.py FailureHook).
    delivery_failed: tuple[Callable[..., Awaitable[str | None]], ...] = ()
    # `async (session, ref) -> set[str]`: every name of what `ref` names (an account's id, cus_…,
    # email), for the core's commands that filter by a subject (`audit <account>`).
    aliases: tuple[Callable[..., Awaitable[set[str]]], ...] = ()
    # Keeps the messages pinned with the `[incidents] pin_emoji` reaction (bot/pins.py); one family.
    pins: PinKeeper | None = None
    home: tuple[HomeSection, ...] = ()  # the App Home's sections (shown in the order of their `place`)


class Families:
    """Every family, in order (the order of `help`, of the demo tour, of the routes)."""

    def __init__(self, families: Iterable[Family]):
        self.families = tuple(families)
        names = [f.name for f in self.families]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"families registered twice: {', '.join(sorted(duplicates))}")

    def registry(self) -> Registry:
        registry = Registry()
        for family in self.families:
            for commands in family.commands:
                registry.add(commands)
        return registry

    @property
    def job_kinds(self) -> list[JobKind]:
        return [kind for family in self.families for kind in family.jobs]

    @property
    def recorders(self) -> list[Recorder]:
        return [recorder for family in self.families for recorder in family.recorders]

    @property
    def routes(self) -> list["APIRouter"]:
        return [route for family in self.families for route in family.routes]

    @property
    def endpoints(self) -> list["Endpoint"]:
        return [endpoint for family in self.families for endpoint in family.endpoints]

    @property
    def tour(self) -> list[tuple[str, str]]:
        return [line for family in self.families for line in family.tour]

    @property
    def cli(self) -> list[CliCommand]:
        return [command for family in self.families for command in family.cli]

    def template_samples(self, settings: Settings) -> dict[str, Mapping[str, Any]]:
        samples: dict[str, Mapping[str, Any]] = {}
        for family in self.families:
            if family.templates is not None:
                samples.update(family.templates(settings))
        return samples

    async def seed(self, services: Services) -> None:
        """Sample data for `revops console --demo`."""
        for family in self.families:
            for seeder in family.seeders:
                await seeder(services)

    def build_services(self, settings: Settings, clock: Clock | None = None, db: Database | None = None) -> Services:
        services = Services(
            settings=settings,
            db=db or Database(settings.env.database_url, pool_size=settings.env.revops_db_pool_size),
            clock=clock or Clock(),
            registry=self.registry(),
            recorders=self.recorders,
            scheduler=Scheduler(self.job_kinds),
            template_samples=self.template_samples,
            delivery_failed=[hook for family in self.families for hook in family.delivery_failed],
            aliases=[hook for family in self.families for hook in family.aliases],
        )
        keepers = [family.pins for family in self.families if family.pins is not None]
        if keepers:
            services.extras["pins"] = keepers[0]  # read by the Slack adapter (bot/slack/reactions.py)
        services.extras["home_sections"] = sorted((s for f in self.families for s in f.home), key=lambda s: s.place)
        for family in self.families:
            if family.setup is not None:
                family.setup(services)
        return services
