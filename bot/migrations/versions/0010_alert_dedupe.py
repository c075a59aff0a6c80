"""alert repeats: a monitor's `dedupe_key`, the count of repeats and when the last one came

A repeat of an open alert (the same `dedupe_key`, or the same stage + metric inside
`[alerts] dedupe_window`) updates its card instead of posting a new one.

Revision ID: 0010_alert_dedupe
Revises: 0007_one_job_system
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0010_alert_dedupe"
down_revision = "0007_one_job_system"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incident_alerts") as batch:
        batch.add_column(sa.Column("dedupe_key", sa.String(200)))
        batch.add_column(sa.Column("repeats", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_seen_at", UTCDateTime()))
    op.create_index("ix_incident_alerts_dedupe_key", "incident_alerts", ["dedupe_key"])
    op.create_index("ix_incident_alerts_stage_metric", "incident_alerts", ["stage", "metric"])


def downgrade() -> None:
    op.drop_index("ix_incident_alerts_stage_metric", "incident_alerts")
    op.drop_index("ix_incident_alerts_dedupe_key", "incident_alerts")
    with op.batch_alter_table("incident_alerts") as batch:
        batch.drop_column("last_seen_at")
        batch.drop_column("repeats")
        batch.drop_column("dedupe_key")
