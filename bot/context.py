"""What a command handler gets: who asked, where, its unit of work, the flags,
and a way to post to channels without knowing Slack."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession

from .flags import FlagState, read_flags
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
    session: AsyncSession  # a read unit for actions that change nothing, else the unit of work that writes
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
            self.flags = await read_flags(self.session)
        return self.flags

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        """A short write transaction of its own, for a handler in a read unit that must store a
        by-product of its work (the health command's probe history) after its network calls.
        No network call inside it. (A mutating handler writes through `self.session`.)"""
        async with self.services.db.transaction() as session:
            yield session

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
