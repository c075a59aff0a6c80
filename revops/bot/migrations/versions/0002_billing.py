"""billing: Stripe events, mirror (customers, subscriptions, invoices), accounts and credit ledger

Revision ID: 0002_billing
Revises: 0001_core
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0002_billing"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
