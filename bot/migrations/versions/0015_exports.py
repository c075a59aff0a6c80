"""CSV exports (issue 18 item 4): each `export …` file, behind its signed expiring link

Revision ID: 0015_exports
Revises: 0014_channel_pace
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0015_exports"
down_revision = "0014_channel_pace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64)),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(120), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
    )
    op.create_index("ix_exports_expires_at", "exports", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_exports_expires_at", table_name="exports")
    op.drop_table("exports")
