"""timeline: messages pinned with a reaction (issue 19 item 3) — the Slack message an entry
came from (its ts and permalink), at most once per incident

Revision ID: 0021_timeline_pins
Revises: 0018_incident_roles
"""
import sqlalchemy as sa
from alembic import op

revision = "0021_timeline_pins"
down_revision = "0018_incident_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incident_timeline") as batch:
        batch.add_column(sa.Column("source_ts", sa.String(32)))
        batch.add_column(sa.Column("source_permalink", sa.Text()))
    op.create_index("ux_incident_timeline_source", "incident_timeline", ["incident_id", "source_ts"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_incident_timeline_source", table_name="incident_timeline")
    with op.batch_alter_table("incident_timeline") as batch:
        batch.drop_column("source_permalink")
        batch.drop_column("source_ts")
