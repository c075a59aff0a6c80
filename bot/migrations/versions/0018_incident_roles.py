"""Incident roles (issue 19 item 4): the comms lead and the scribe beside the commander

Revision ID: 0018_incident_roles
Revises: 0015_exports
"""
import sqlalchemy as sa
from alembic import op

revision = "0018_incident_roles"
down_revision = "0015_exports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("comms", sa.String(64)))
        batch.add_column(sa.Column("scribe", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("scribe")
        batch.drop_column("comms")
