"""`revops console --demo`: a fresh SQLite database, the example configuration,
sample data, and a scripted tour through the console surface."""

from __future__ import annotations

from typing import Awaitable, Callable

from .services import Services

# Families add sample data here (accounts, customers, incidents...).
SEEDERS: list[Callable[[Services], Awaitable[None]]] = []

# (user, line) pairs run in order; "click N" clicks the Nth button shown so far.
TOUR: list[tuple[str, str]] = [
    ("U0VIEWER", "/revops help"),
    ("U0VIEWER", "/revops dryrun on"),
    ("U0ADMIN", "/revops dryrun on"),
    ("U0ADMIN", "/revops dryrun status"),
    ("U0ADMIN", "/revops dryrun off"),
    ("U0ADMIN", "/revops panic on"),
    ("U0ADMIN", "click 1"),
    ("U0VIEWER", "/revops panic status"),
    ("U0ADMIN", "/revops panic off"),
    ("U0RESPONDER", "/revops frobnicate"),
    ("U0APPROVER", "/revops audit"),
    ("U0VIEWER", "/revops health"),  # the example service cannot be reached offline: shown as down
    ("U0RESPONDER", "/revops preflight"),
]


async def seed(services: Services) -> None:
    for seeder in SEEDERS:
        await seeder(services)


# Billing sample data (bot/billing/demo.py).
from .billing.demo import BILLING_TOUR, seed_billing  # noqa: E402

SEEDERS.append(seed_billing)
TOUR += BILLING_TOUR

# Incident sample data and tour (bot/incidents/demo.py).
from .incidents.demo import INCIDENT_TOUR, seed_incidents  # noqa: E402

SEEDERS.append(seed_incidents)
TOUR += INCIDENT_TOUR

# The four-eyes grant flow (bot/grants/demo.py).
from .grants.demo import GRANTS_TOUR  # noqa: E402

TOUR += GRANTS_TOUR
