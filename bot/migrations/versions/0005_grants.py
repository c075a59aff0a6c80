"""grants: credit grant and adjustment requests (four-eyes approval)

Revision ID: 0005_grants
Revises: 0004_incidents
"""
import sqlalchemy as sa
from alembic import op

from bot.models import BigId, UTCDateTime

revision = "0005_grants"
down_revision = "0004_incidents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grant_requests",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("amount", BigId, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requester", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", UTCDateTime()),
        sa.Column("decision_note", sa.Text()),
        sa.Column("ledger_entry_id", BigId),
        sa.Column("balance_after", BigId),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'cancelled', 'expired')",
                           name="ck_grant_status"),
        sa.CheckConstraint("kind IN ('grant', 'adjustment')", name="ck_grant_kind"),
    )
    op.create_index("ix_grant_requests_pending", "grant_requests", ["status", "expires_at"])
    op.create_index("ix_grant_requests_account", "grant_requests", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_grant_requests_account", "grant_requests")
    op.drop_index("ix_grant_requests_pending", "grant_requests")
    op.drop_table("grant_requests")
