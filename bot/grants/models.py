"""A grant or adjustment request, from pending to one final state, exactly once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.models import Base, BigId

STATUSES = ("pending", "approved", "rejected", "cancelled", "expired")


class GrantRequest(Base):
    __tablename__ = "grant_requests"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'rejected', 'cancelled', 'expired')",
                        name="ck_grant_status"),
        CheckConstraint("kind IN ('grant', 'adjustment')", name="ck_grant_kind"),
        Index("ix_grant_requests_pending", "status", "expires_at"),
        Index("ix_grant_requests_account", "account_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[str] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    reason: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str | None] = mapped_column(Text)
    ledger_entry_id: Mapped[int | None] = mapped_column(BigId)
    balance_after: Mapped[int | None] = mapped_column(BigId)

    @property
    def ref(self) -> str:
        return f"grant:{self.id}"

    @property
    def what(self) -> str:
        return "grant" if self.kind == "grant" else "adjustment"
