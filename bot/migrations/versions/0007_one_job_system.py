"""one job system: the health probe round is a scheduled job, its lease table goes

The worker's probe round used to be claimed through `health_runs` (one row, a conditional
update). It is now the health family's `health_probes` job in `scheduled_jobs`, claimed like
every other job; the row for it is created by the first worker tick.

Revision ID: 0007_one_job_system
Revises: 0006_timeline_index
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0007_one_job_system"
down_revision = "0006_timeline_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("health_runs")


def downgrade() -> None:
    op.create_table(
        "health_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("next_at", UTCDateTime()),
        sa.Column("claimed_by", sa.String(100)),
    )
    op.execute(sa.text("INSERT INTO health_runs (id) VALUES (1)"))
