"""Invoice actions (issue 18): four-eyes requests to mark an invoice paid out of band or void it,
and what the receivables list needs of the mirrored invoice (its due date, its collection method)

Revision ID: 0013_invoice_actions
Revises: 0011_slack_delivery
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0013_invoice_actions"
down_revision = "0012_lineage"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "invoice_action_requests",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("invoice_id", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255)),
        sa.Column("amount", BigId, nullable=False),
        sa.Column("currency", sa.String(8)),
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
        sa.CheckConstraint("action IN ('mark_paid', 'void')", name="ck_invoice_action_kind"),
        sa.CheckConstraint("status IN ('pending', 'approving', 'approved', 'failed', 'rejected', 'cancelled', "
                           "'expired')", name="ck_invoice_action_status"),
    )
    op.create_index("ix_invoice_action_requests_pending", "invoice_action_requests", ["status", "expires_at"])
    op.create_index("ix_invoice_action_requests_invoice", "invoice_action_requests", ["invoice_id"])
    with op.batch_alter_table("stripe_invoices") as batch:
        batch.add_column(sa.Column("due_date", UTCDateTime()))
        batch.add_column(sa.Column("collection_method", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("stripe_invoices") as batch:
        batch.drop_column("collection_method")
        batch.drop_column("due_date")
    op.drop_index("ix_invoice_action_requests_invoice", "invoice_action_requests")
    op.drop_index("ix_invoice_action_requests_pending", "invoice_action_requests")
    op.drop_table("invoice_action_requests")
