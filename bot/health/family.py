"""The health family's registration: `health` and `preflight`, the scheduled probe round,
and `revops preflight` for deploy pipelines."""

from __future__ import annotations

from commands import health, preflight

from ..family import CliCommand, Family
from ..scheduler import JobKind
from .cli import preflight_main
from .job import probe_every, scheduled_round

family = Family(
    "health",
    commands=(health.commands, preflight.commands),
    jobs=(JobKind("health_probes", scheduled_round, every=probe_every, after_claim=True, start_now=True),),
    tour=(
        ("U0VIEWER", "/revops health"),  # the example service cannot be reached offline: shown as down
        ("U0RESPONDER", "/revops preflight"),
    ),
    cli=(CliCommand("preflight", "go-live checklist; exit 1 on any fail", preflight_main),),
)
