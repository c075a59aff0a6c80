"""incidents: incidents, timeline entries, monitoring alerts, scheduled jobs

Revision ID: 0004_incidents
Revises: 0003_health
"""
import sqlalchemy as sa
from alembic import op

from bot.models import BigId, UTCDateTime

revision = "0004_incidents"
down_revision = "0003_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(64), nullable=False, index=True),
        sa.Column("open_channel", sa.String(64), unique=True),
        sa.Column("severity", sa.String(4), nullable=False),
        sa.Column("stage", sa.String(100), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("declared_by", sa.String(64), nullable=False),
        sa.Column("commander", sa.String(64)),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.Column("declared_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("acknowledged_at", UTCDateTime()),
        sa.Column("mitigated_at", UTCDateTime()),
        sa.Column("resolved_at", UTCDateTime()),
        sa.Column("resolved_by", sa.String(64)),
        sa.Column("root_cause", sa.Text()),
        sa.Column("impact", sa.JSON()),
        sa.Column("last_human_update_at", UTCDateTime()),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("alert_id", BigId),
    )
    op.create_table(
        "incident_timeline",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("incident_id", BigId, sa.ForeignKey("incidents.id"), nullable=False, index=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON()),
    )
    op.create_table(
        "incident_alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("received_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("stage", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("baseline_mean", sa.Float(), nullable=False),
        sa.Column("baseline_std", sa.Float(), nullable=False),
        sa.Column("current", sa.Float(), nullable=False),
        sa.Column("traffic_per_hour", sa.Float()),
        sa.Column("aov", sa.Float()),
        sa.Column("sigma", sa.Float(), nullable=False),
        sa.Column("severity", sa.String(4), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("acknowledged_by", sa.String(64)),
        sa.Column("acknowledged_at", UTCDateTime()),
        sa.Column("incident_id", BigId),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
    )
    op.create_table(
        "scheduled_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("incident_id", BigId, index=True),
        sa.Column("due_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("every_seconds", sa.Float()),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("last_run_at", UTCDateTime()),
        sa.Column("last_error", sa.Text()),
        sa.Column("data", sa.JSON()),
    )


def downgrade() -> None:
    for table in ("scheduled_jobs", "incident_alerts", "incident_timeline", "incidents"):
        op.drop_table(table)
