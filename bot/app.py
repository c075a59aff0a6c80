"""The composition root: the one module that imports every family and wires them into the
core — the registry and Services (commands, button actions, recorders), the scheduler (job
kinds), the FastAPI app (routes), the demo (seeders, tour), the template check (samples) and
the command line (extra sub-commands).

A new family adds its registration (`bot/<family>/family.py`, see bot/family.py) to
FAMILIES below; nothing else in the core changes. The order is the order of `help`, of the
demo tour and of the HTTP routes.
"""

from __future__ import annotations

from fastapi import FastAPI

from commands import audit, flags, help

from . import cli
from .billing.family import family as billing
from .clock import Clock
from .db import Database
from .family import Families
from .grants.family import family as grants
from .health.family import family as health
from .incidents.family import family as incidents
from .outbox import Sender
from .runtime import Runtime
from .services import Services
from .settings import Settings
from .web.app import create_app as create_web_app

FAMILIES = Families([help.family, flags.family, audit.family, billing, health, incidents, grants])


def build_services(settings: Settings, clock: Clock | None = None, db: Database | None = None) -> Services:
    """Every family's services for one process (or one test's side of the database)."""
    return FAMILIES.build_services(settings, clock, db)


def runtime(settings: Settings, *, clock: Clock | None = None, sender: Sender | None = None,
            with_worker: bool = False) -> Runtime:
    return Runtime(settings, FAMILIES, clock=clock, sender=sender, with_worker=with_worker)


def create_app(settings: Settings, *, clock: Clock | None = None, sender: Sender | None = None,
               with_worker: bool | None = None, delivers: bool | None = None) -> FastAPI:
    """The HTTP app (`revops serve`): the core's endpoints and every family's routes."""
    return create_web_app(settings, FAMILIES, clock=clock, sender=sender, with_worker=with_worker,
                          delivers=delivers)


def main(argv: list[str] | None = None) -> int:
    """The `revops` command line."""
    return cli.main(argv, FAMILIES)
