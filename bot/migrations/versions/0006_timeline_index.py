"""timeline: an index for "the latest entry of this kind" (incident status, updates)

A long incident gathers thousands of timeline entries (every action in its channel);
`incident status` asks for the latest update, which without this index reads them all.

Revision ID: 0006_timeline_index
Revises: 0005_grants
"""
from alembic import op

revision = "0006_timeline_index"
down_revision = "0005_grants"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_incident_timeline_kind_at", "incident_timeline", ["incident_id", "kind", "at"])


def downgrade() -> None:
    op.drop_index("ix_incident_timeline_kind_at", table_name="incident_timeline")
