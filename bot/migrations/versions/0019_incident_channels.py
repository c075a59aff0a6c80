"""An incident's own channel (issue 19 item 5): its id, its state, the channel it was declared in,
and when it was archived

Revision ID: 0019_incident_channels
Revises: 0020_home_viewers
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0019_incident_channels"
down_revision = "0020_home_viewers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("own_channel", sa.String(64)))
        batch.add_column(sa.Column("own_channel_state", sa.String(16)))
        batch.add_column(sa.Column("home_channel", sa.String(64)))
        batch.add_column(sa.Column("archived_at", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("archived_at")
        batch.drop_column("home_channel")
        batch.drop_column("own_channel_state")
        batch.drop_column("own_channel")
