"""The billing family's registration: what it adds to the bot (read by bot/app.py)."""

from __future__ import annotations

from commands import credits, customer, events, lineage, reconcile, replay, sync, trace

from ..family import Family
from ..services import Services
from .demo import BILLING_TOUR, seed_billing
from .routes import router
from .stripe_client import StripeClient
from .trace import aliases


def attach_stripe(services: Services) -> None:
    """The Stripe gateway every billing command, replay and reconcile goes through."""
    services.stripe = StripeClient.from_settings(services.settings)


family = Family(
    "billing",
    commands=(customer.commands, credits.commands, replay.commands, sync.commands, reconcile.commands,
              events.commands, trace.commands, lineage.commands),
    routes=(router,),  # POST /webhooks/stripe
    seeders=(seed_billing,),
    tour=tuple(BILLING_TOUR),
    setup=attach_stripe,
    aliases=(aliases,),  # `audit <account>` by its id, cus_… or email
)
