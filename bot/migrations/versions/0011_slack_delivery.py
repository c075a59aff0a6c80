"""Slack as it is: who caused each outgoing post (told when Slack refuses it for good),
claims of signed Slack requests (a replay runs once), and the app's state (sending paused
while its token is revoked)

Revision ID: 0011_slack_delivery
Revises: 0008_stripe_today
"""
import sqlalchemy as sa
from alembic import op

from bot.models import UTCDateTime

revision = "0011_slack_delivery"
down_revision = "0008_stripe_today"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outgoing_messages") as batch:
        batch.add_column(sa.Column("author", sa.String(64)))
        batch.add_column(sa.Column("origin_channel", sa.String(64)))
        batch.add_column(sa.Column("on_failure", sa.String(16)))
    op.create_table(
        "slack_request_claims",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_slack_request_claims_claimed_at", "slack_request_claims", ["claimed_at"])
    op.create_table(
        "slack_app_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("paused", sa.String(200)),
        sa.Column("since", UTCDateTime()),
        sa.Column("cleared_at", UTCDateTime()),
    )
    op.execute(sa.text("INSERT INTO slack_app_state (id) VALUES (1)"))


def downgrade() -> None:
    op.drop_table("slack_app_state")
    op.drop_index("ix_slack_request_claims_claimed_at", "slack_request_claims")
    op.drop_table("slack_request_claims")
    with op.batch_alter_table("outgoing_messages") as batch:
        batch.drop_column("on_failure")
        batch.drop_column("origin_channel")
        batch.drop_column("author")
