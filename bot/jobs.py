"""The periodic jobs `revops worker` runs (each family adds its own here)."""

from __future__ import annotations

from .settings import Settings
from .worker import PeriodicJob


def periodic_jobs(settings: Settings) -> list[PeriodicJob]:
    jobs: list[PeriodicJob] = []
    from .incidents.scheduler import periodic_job as incident_scheduler

    jobs.append(incident_scheduler(settings))  # incident cadences, escalation, daily reconcile
    # Pending grant requests past approval_ttl: every worker may sweep (the expiry is a conditional update).
    from datetime import timedelta

    from .grants.jobs import expire_due

    jobs.append(PeriodicJob("grant_expiry", timedelta(seconds=15), expire_due))
    if settings.cfg.services:
        from .health.job import probe_round

        jobs.append(PeriodicJob("health_probes", settings.cfg.health.probe_every, probe_round))
    return jobs


def register_scheduled_kinds() -> None:
    """Import the modules that register job kinds with the database scheduler."""
    from .incidents import jobs as _incident_jobs  # noqa: F401  (cadences, escalation, daily reconcile)
