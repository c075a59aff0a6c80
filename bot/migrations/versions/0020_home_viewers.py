"""The App Home (issue 19 item 2): who opened their Home tab, so it is published again when its data changes

Revision ID: 0020_home_viewers
Revises: 0021_timeline_pins
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0020_home_viewers"
down_revision = "0021_timeline_pins"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "home_viewers",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_home_viewers_opened_at", "home_viewers", ["opened_at"])


def downgrade() -> None:
    op.drop_index("ix_home_viewers_opened_at", table_name="home_viewers")
    op.drop_table("home_viewers")
