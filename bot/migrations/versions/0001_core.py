"""core: audit log, flags, Slack deliveries, outgoing messages, console buttons

Revision ID: 0001_core
Revises:
"""
import sqlalchemy as sa
from alembic import op

from bot.models import BigId, UTCDateTime

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False, index=True),
        sa.Column("command", sa.String(200), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(64)),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("subject", sa.String(200), index=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("last_id", BigId, nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("count", BigId, nullable=False),
    )
    op.execute(sa.text(f"INSERT INTO audit_head (id, last_id, last_hash, count) VALUES (1, 0, '{GENESIS}', 0)"))
    op.create_table(
        "flags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("panic", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime()),
        sa.Column("updated_by", sa.String(64)),
    )
    op.execute(sa.text("INSERT INTO flags (id, dry_run, panic) VALUES (1, false, false)"))
    op.create_table(
        "slack_deliveries",
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "outgoing_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(64), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reply", sa.JSON(), nullable=False),
        sa.Column("ref", sa.String(100), index=True),
        sa.Column("thread_ts", sa.String(40)),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("ts", sa.String(40)),
        sa.Column("error", sa.Text()),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_until", UTCDateTime()),
    )
    op.create_table(
        "message_refs",
        sa.Column("ref", sa.String(100), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("ts", sa.String(40)),
    )
    op.create_table(
        "console_buttons",
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("action_id", sa.String(100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("message_ref", sa.String(100)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("beat_at", UTCDateTime(), nullable=False),
    )
    # The audit log is append-only in the database itself, not only in Python.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION 'audit_log is append-only';
            END;
            $$ LANGUAGE plpgsql;
            """
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_change ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    for table in (
        "worker_heartbeats",
        "console_buttons",
        "message_refs",
        "outgoing_messages",
        "slack_deliveries",
        "flags",
        "audit_head",
        "audit_log",
    ):
        op.drop_table(table)
