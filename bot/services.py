"""The services a request can use, built once per process by the composition root (bot/app.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from .clock import Clock
from .db import Database
from .registry import Registry
from .scheduler import Scheduler
from .settings import Settings

# Template name -> the sample context it is checked with (what the families declare).
TemplateSamples = Callable[[Settings], Mapping[str, Mapping[str, Any]]]


def no_samples(settings: Settings) -> Mapping[str, Mapping[str, Any]]:
    return {}


@dataclass(frozen=True)
class Recorder:
    """A hook at the router's recording point. `write(session, record)` runs inside the unit of
    work that writes; `wants(record)` says, without the database, whether it could write anything
    for this action (a quick read with nothing to record then writes nothing)."""

    write: Callable[..., Awaitable[None]]
    wants: Callable[[Any], bool] = lambda record: True


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    registry: Registry
    # The router's one recording point: called inside the request's transaction
    # with (session, ActionRecord) after every command or click that ran.
    recorders: list[Recorder] = field(default_factory=list)
    # Called after a commit that queued posts (the Slack adapter delivers them).
    on_posts: list[Callable[[], None]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    # The billing family's Stripe gateway (bot/billing/stripe_client.py), attached by its
    # registration's `setup`; None in hand-built Services. Typed loosely: the core knows no family.
    stripe: Any = None
    # The one job system, with the job kinds every family declared.
    scheduler: Scheduler = field(default_factory=Scheduler)
    # Every template the families render, with sample data (start-up and preflight check them).
    template_samples: TemplateSamples = no_samples
    # Called by the outbox, in its transaction, when Slack refuses a post for good (the families'
    # `delivery_failed` hooks: the incident timeline, the grants' note to the requester).
    delivery_failed: list[Callable[..., Awaitable[Any]]] = field(default_factory=list)
    # The families' `aliases` providers: every name of the subject a reference names.
    aliases: list[Callable[..., Awaitable[set[str]]]] = field(default_factory=list)

    async def names_of(self, session, ref: str) -> set[str]:
        """`ref` and every other name the families know for it (e.g. an account's cus_… and email)."""
        names = {ref}
        for provider in self.aliases:
            names |= await provider(session, ref)
        return names
