"""health: probe results (p95 history), last status per service, the probe-round lease

Revision ID: 0003_health
Revises: 0002_billing
"""
import sqlalchemy as sa
from alembic import op

from bot.models import BigId, UTCDateTime

revision = "0003_health"
down_revision = "0002_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "health_probes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("service", sa.String(100), nullable=False),
        sa.Column("env", sa.String(32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_code", sa.Integer()),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("version", sa.String(80)),
        sa.Column("detail", sa.String(200)),
    )
    op.create_index("ix_health_probes_service_env_at", "health_probes", ["service", "env", "at"])
    op.create_table(
        "health_status",
        sa.Column("service", sa.String(100), primary_key=True),
        sa.Column("env", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("checked_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "health_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("next_at", UTCDateTime()),
        sa.Column("claimed_by", sa.String(100)),
    )
    op.execute(sa.text("INSERT INTO health_runs (id) VALUES (1)"))


def downgrade() -> None:
    op.drop_table("health_runs")
    op.drop_table("health_status")
    op.drop_index("ix_health_probes_service_env_at", table_name="health_probes")
    op.drop_table("health_probes")
