"""What a command handler gets: who asked, where, the open transaction, the flags,
and a way to post to channels without knowing Slack."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from .flags import FlagState
from .reply import Reply
from .roles import Role

if TYPE_CHECKING:
    from .services import Services


@dataclass
class PendingPost:
    channel: str
    reply: Reply
    kind: str = "post"  # post | update
    ref: str | None = None
    thread_ts: str | None = None


@dataclass
class Context:
    services: "Services"
    session: AsyncSession
    actor: str
    role: Role
    channel: str | None
    surface: str
    now: datetime
    flags: FlagState | None  # read up front for actions that change things; quick reads ask `current_flags()`
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    dry_run: bool = False
    message_ref: str | None = None  # for clicks: the message holding the button
    posts: list[PendingPost] = field(default_factory=list)
    audit_subject: str | None = None
    audit_detail: str | None = None
    audit_data: dict[str, Any] = field(default_factory=dict)  # merged into the audit record's arguments
    outcome: str | None = None  # a handler may name its outcome (e.g. "refused") instead of "ok"
    timeline: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def settings(self):
        return self.services.settings

    async def current_flags(self) -> FlagState:
        if self.flags is None:
            from .flags import read_flags

            self.flags = await read_flags(self.session)
        return self.flags

    def post(self, channel: str | None, reply: Reply, *, ref: str | None = None, thread_ts: str | None = None) -> None:
        """Post a message to a channel after the transaction commits (nothing if no channel)."""
        if channel:
            reply.private = False
            self.posts.append(PendingPost(channel, reply, "post", ref, thread_ts))

    def update(self, ref: str, reply: Reply, channel: str = "") -> None:
        """Update a message posted earlier under `ref`, in place."""
        reply.private = False
        self.posts.append(PendingPost(channel, reply, "update", ref))

    def note(self, *, subject: str | None = None, detail: str | None = None, **data: Any) -> None:
        """Enrich this request's audit record (subject, a sentence, structured fields)."""
        if subject is not None:
            self.audit_subject = subject
        if detail is not None:
            self.audit_detail = detail
        self.audit_data.update(data)
