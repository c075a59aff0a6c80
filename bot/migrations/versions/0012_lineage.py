"""finance lineage: each invariant check of an applied Stripe event, and the hours a violation was posted

Revision ID: 0012_lineage
Revises: 0011_slack_delivery
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0012_lineage"
down_revision = "0011_slack_delivery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lineage_checks",
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("invariant", sa.String(100), primary_key=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_lineage_checks_invariant_at", "lineage_checks", ["invariant", "at"])
    op.create_table(
        "lineage_posts",
        sa.Column("invariant", sa.String(100), primary_key=True),
        sa.Column("hour", UTCDateTime(), primary_key=True),
        sa.Column("event_id", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("lineage_posts")
    op.drop_index("ix_lineage_checks_invariant_at", "lineage_checks")
    op.drop_table("lineage_checks")
