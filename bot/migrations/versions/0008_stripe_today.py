"""stripe today: each event's api_version and account, every subscription item, payments

Revision ID: 0008_stripe_today
Revises: 0010_alert_dedupe
"""
import sqlalchemy as sa
from alembic import op

from bot.models import BigId, UTCDateTime

revision = "0008_stripe_today"
down_revision = "0010_alert_dedupe"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_events") as batch:
        batch.add_column(sa.Column("api_version", sa.String(64)))
        batch.add_column(sa.Column("account", sa.String(255)))
    with op.batch_alter_table("stripe_subscriptions") as batch:
        batch.add_column(sa.Column("items", sa.JSON()))
    op.create_table(
        "stripe_payments",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(255), index=True),
        sa.Column("invoice_id", sa.String(255), index=True),
        sa.Column("charge_id", sa.String(255), index=True),
        sa.Column("status", sa.String(32)),
        sa.Column("currency", sa.String(8)),
        sa.Column("amount", BigId, nullable=False),
        sa.Column("amount_refunded", BigId, nullable=False),
        sa.Column("refunds_version", BigId, nullable=False),
        sa.Column("refunds", sa.JSON()),
        sa.Column("disputes", sa.JSON()),
        sa.Column("failure", sa.Text()),
        sa.Column("version", BigId, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stripe_payments")
    with op.batch_alter_table("stripe_subscriptions") as batch:
        batch.drop_column("items")
    with op.batch_alter_table("stripe_events") as batch:
        batch.drop_column("account")
        batch.drop_column("api_version")
