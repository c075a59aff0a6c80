"""The periodic jobs `revops worker` runs (each family adds its own here)."""

from __future__ import annotations

from .settings import Settings
from .worker import PeriodicJob


def periodic_jobs(settings: Settings) -> list[PeriodicJob]:
    jobs: list[PeriodicJob] = []
    return jobs
