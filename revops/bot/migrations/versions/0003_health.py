"""billing: Stripe events, mirror (customers, subscriptions, invoices), accounts and credit ledger

Revision ID: 0003_health
Revises: 0002_billing
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0003_health"
down_revision = "0002_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
