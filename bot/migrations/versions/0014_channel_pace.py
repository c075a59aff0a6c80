"""One pace per Slack channel across every delivering process (issue 16 items 1, 2): the
channel's next allowed send time and a short lease on it

Revision ID: 0014_channel_pace
Revises: 0013_invoice_actions
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0014_channel_pace"
down_revision = "0013_invoice_actions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_pace",
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("next_send_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claimed_until", UTCDateTime()),
    )


def downgrade() -> None:
    op.drop_table("channel_pace")
