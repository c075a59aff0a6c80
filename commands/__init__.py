"""The runbook actions, one module per sub-command family. None of them imports Slack."""

from bot.registry import Registry

from . import audit, credits, customer, flags, health, help, preflight, reconcile, replay, sync
from . import grant, impact, incident


def build_registry() -> Registry:
    registry = Registry()
    for family in (help, flags, audit, customer, credits, replay, sync, reconcile, health, preflight, incident, impact, grant):
        registry.add(family.commands)
    return registry
