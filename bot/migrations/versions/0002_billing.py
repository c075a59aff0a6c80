"""billing: Stripe events, mirror (customers, subscriptions, invoices), accounts and credit ledger

Revision ID: 0002_billing
Revises: 0001_core
"""
import sqlalchemy as sa
from alembic import op

from bot.models import BigId, UTCDateTime

revision = "0002_billing"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False, index=True),
        sa.Column("created", UTCDateTime(), nullable=False, index=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("object_id", sa.String(255), index=True),
        sa.Column("customer_id", sa.String(255), index=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("detail", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False, index=True),
        sa.Column("processed_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("status IN ('processed', 'failed', 'ignored')", name="ck_stripe_events_status"),
    )
    op.create_table(
        "stripe_customers",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("email", sa.String(320), index=True),
        sa.Column("name", sa.String(255)),
        sa.Column("account_id", sa.String(255), index=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("version", BigId, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "stripe_subscriptions",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(255), index=True),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("plan", sa.String(255)),
        sa.Column("current_period_end", UTCDateTime()),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("version", BigId, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "stripe_invoices",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(255), index=True),
        sa.Column("subscription_id", sa.String(255)),
        sa.Column("status", sa.String(32)),
        sa.Column("currency", sa.String(8)),
        sa.Column("amount_due", BigId, nullable=False),
        sa.Column("amount_paid", BigId, nullable=False),
        sa.Column("amount_remaining", BigId, nullable=False),
        sa.Column("amount_refunded", BigId, nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_payment_attempt", UTCDateTime()),
        sa.Column("payment_failed", sa.Boolean(), nullable=False),
        sa.Column("invoice_created", UTCDateTime()),
        sa.Column("version", BigId, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("stripe_customer_id", sa.String(255), unique=True),
        sa.Column("email", sa.String(320), index=True),
        sa.Column("balance", BigId, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        # The balance can never go negative: the database refuses it, whatever the code does.
        sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_not_negative"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(255), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("delta", BigId, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
        sa.Column("ref", sa.String(255), index=True),
        sa.Column("balance_after", BigId, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('purchase', 'grant', 'adjustment', 'claim')", name="ck_ledger_kind"),
        sa.CheckConstraint("balance_after >= 0", name="ck_ledger_balance_after"),
    )
    op.create_index("ix_ledger_account_at", "ledger_entries", ["account_id", "at"])
    # The ledger is append-only in the database itself, like the audit log.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION ledger_entries_append_only() RETURNS trigger AS $$
            BEGIN
              RAISE EXCEPTION 'ledger_entries is append-only';
            END;
            $$ LANGUAGE plpgsql;
            """
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_no_change BEFORE UPDATE OR DELETE ON ledger_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries "
            "BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END"
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries "
            "BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_no_change ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_append_only()")
    op.drop_index("ix_ledger_account_at", table_name="ledger_entries")
    for table in ("ledger_entries", "accounts", "stripe_invoices", "stripe_subscriptions", "stripe_customers",
                  "stripe_events"):
        op.drop_table(table)
