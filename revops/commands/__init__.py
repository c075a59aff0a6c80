"""The runbook actions, one module per sub-command family. None of them imports Slack."""

from revops.bot.registry import Registry

from . import audit, flags, help


def build_registry() -> Registry:
    registry = Registry()
    for family in (help, flags, audit):
        registry.add(family.commands)
    return registry
