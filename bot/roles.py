"""Roles: viewer < responder < approver < admin; each includes the ones below it."""

from __future__ import annotations

from enum import IntEnum

from .settings import RolesSection


class Role(IntEnum):
    viewer = 0
    responder = 1
    approver = 2
    admin = 3

    def __str__(self) -> str:
        return self.name


def role_of(roles: RolesSection, user_id: str) -> Role:
    """The highest role the configuration gives this Slack user id."""
    if user_id in roles.admin:
        return Role.admin
    if user_id in roles.approver:
        return Role.approver
    if user_id in roles.responder:
        return Role.responder
    return Role.viewer
