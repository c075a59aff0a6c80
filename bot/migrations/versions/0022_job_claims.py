"""Batch claims of scheduled jobs (issue 16 item 5): who claimed a job and until when (a lease
another worker takes over once it has run out)

Revision ID: 0022_job_claims
Revises: 0019_incident_channels
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0022_job_claims"
down_revision = "0019_incident_channels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scheduled_jobs") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64)))
        batch.add_column(sa.Column("claimed_until", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("scheduled_jobs") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
