"""Database tables of the core: audit log, flags, Slack deliveries and request claims, the Slack
app's state, outgoing posts."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite has no 64-bit autoincrement type of its own; BigInteger there must be INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both PostgreSQL and SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict: JSON(), list: JSON()}


class AuditRecord(Base):
    """Append-only and hash-chained: each record's hash covers the previous one."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64), index=True)
    command: Mapped[str] = mapped_column(String(200))
    args: Mapped[dict]
    outcome: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(64))
    surface: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(String(200), index=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """A single row: the last record's id and hash; it also serialises appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigId, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigId, default=0)


class Flags(Base):
    __tablename__ = "flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    panic: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None]
    updated_by: Mapped[str | None] = mapped_column(String(64))


class SlackDelivery(Base):
    """Slack event ids already handled: a retried delivery does nothing twice."""

    __tablename__ = "slack_deliveries"

    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    received_at: Mapped[datetime]


class OutgoingMessage(Base):
    """A post or in-place update to Slack, written in the same transaction as the
    change it reports and delivered after commit (retried until Slack takes it)."""

    __tablename__ = "outgoing_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # post | update
    reply: Mapped[dict]
    ref: Mapped[str | None] = mapped_column(String(100), index=True)  # names a message to update later
    thread_ts: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    ts: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    # Who caused the post and where they asked (the router fills these): told in words when
    # Slack refuses the post for good. `on_failure`: "tell" (tell the author), "dm" (an
    # ephemeral notice that failed is sent as a DM instead), "owner" (an automated post: its
    # owner, e.g. the incident's commander, is told by DM), None (nobody to tell).
    author: Mapped[str | None] = mapped_column(String(64))
    origin_channel: Mapped[str | None] = mapped_column(String(64))
    on_failure: Mapped[str | None] = mapped_column(String(16))


class ChannelPace(Base):
    """One Slack channel's pace, shared by every delivering process (bot/outbox.py): the next
    time a post may go there, and which process holds the channel (a short lease) while it sends."""

    __tablename__ = "channel_pace"

    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_send_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]


class SlackRequestClaim(Base):
    """A signed Slack request (slash command or interaction) already taken by a replica: the
    same delivery replayed inside the signature window runs once. Pruned after ~10 minutes."""

    __tablename__ = "slack_request_claims"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(index=True)


class SlackAppState(Base):
    """A single row: why sending to Slack is paused (the app was uninstalled or its token
    revoked), or None when Slack takes posts."""

    __tablename__ = "slack_app_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paused: Mapped[str | None] = mapped_column(String(200))
    since: Mapped[datetime | None]
    cleared_at: Mapped[datetime | None]


class MessageRef(Base):
    """Where a named message landed in Slack (channel, ts), for chat.update later."""

    __tablename__ = "message_refs"

    ref: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str | None] = mapped_column(String(40))


class ConsoleButton(Base):
    """Buttons shown by the console, numbered so `click N` works across invocations."""

    __tablename__ = "console_buttons"

    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    action_id: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(64))
    message_ref: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    beat_at: Mapped[datetime]


class ScheduledJob(Base):
    """One scheduled job (bot/scheduler.py): due at `due_at`, every `every_seconds` (or once).

    A worker claims a due job and runs it in one transaction (row lock with SKIP LOCKED on
    PostgreSQL; SQLite write transactions are serial), then moves `due_at` to the next slot
    after now: a long outage yields one catch-up run. Global jobs are keyed "global:<kind>";
    `incident_id` ties a per-incident job to its incident (the incidents family stops them
    together; the column predates the core scheduler and keeps its name)."""

    __tablename__ = "scheduled_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    incident_id: Mapped[int | None] = mapped_column(BigId, index=True)
    due_at: Mapped[datetime] = mapped_column(index=True)
    every_seconds: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)  # active | done
    runs: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict | None]
    # A batch claim (bot/scheduler.py): the worker that claimed the job and until when; after that
    # another worker may take it over (its claimer died before running it). `due_at` stays the slot.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
