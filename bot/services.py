"""The services a request can use, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .clock import Clock
from .db import Database
from .registry import Registry
from .settings import Settings

if TYPE_CHECKING:
    from .billing.stripe_client import StripeClient


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
    # The Stripe gateway (bot/billing/stripe_client.py); None only in hand-built Services.
    stripe: "StripeClient | None" = None


def build_services(settings: Settings, clock: Clock | None = None, db: Database | None = None) -> Services:
    from commands import build_registry

    from .billing.stripe_client import StripeClient

    services = Services(
        settings=settings,
        db=db or Database(settings.env.database_url),
        clock=clock or Clock(),
        registry=build_registry(),
        stripe=StripeClient.from_settings(settings),
    )
    from .incidents.timeline import may_record, record_action

    services.recorders.append(Recorder(record_action, may_record))  # the incident timeline
    return services
