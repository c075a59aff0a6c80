"""The billing family's registration: what it adds to the bot (read by bot/app.py)."""

from __future__ import annotations

from commands import credits, customer, events, export, invoice, lineage, receivables, reconcile, replay, sync, trace

from ..family import Family, HomeSection
from ..services import Services
from .demo import BILLING_TOUR, seed_billing
from .export_routes import router as export_router
from .home import failed_events, invoice_requests
from .invoice_jobs import INVOICE_JOBS
from .routes import STRIPE_WEBHOOK, router
from .stripe_client import StripeClient
from .trace import aliases


def attach_stripe(services: Services) -> None:
    """The Stripe gateway every billing command, replay and reconcile goes through."""
    services.stripe = StripeClient.from_settings(services.settings)


family = Family(
    "billing",
    commands=(customer.commands, credits.commands, replay.commands, sync.commands, reconcile.commands,
              events.commands, trace.commands, lineage.commands, invoice.commands, receivables.commands,
              export.commands),
    endpoints=(STRIPE_WEBHOOK,),  # POST /webhooks/stripe, around FastAPI's routing
    routes=(router, export_router),  # the webhooks' group commit (a lifespan), GET /exports/{id}.csv
    seeders=(seed_billing,),
    tour=tuple(BILLING_TOUR),
    setup=attach_stripe,
    aliases=(aliases,),  # `audit <account>` by its id, cus_… or email
    jobs=INVOICE_JOBS,  # pending invoice requests (mark paid, void) past approval_ttl expire
    templates=receivables.sample_contexts,  # friendly_reminder.md
    # the App Home: invoice requests waiting, failed Stripe events
    home=(HomeSection(invoice_requests, reads="invoice", place=30), HomeSection(failed_events, reads="events", place=40)),
)
