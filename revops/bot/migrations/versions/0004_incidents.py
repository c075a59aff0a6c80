"""billing: Stripe events, mirror (customers, subscriptions, invoices), accounts and credit ledger

Revision ID: 0004_incidents
Revises: 0003_health
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0004_incidents"
down_revision = "0003_health"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
