"""The `exports` table (migration 0015): one CSV made by `export …`, served by its signed link
until it expires (bot/billing/exports.py prunes the expired ones)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.models import Base


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random: the link's path names it
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(64))
    since: Mapped[datetime]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    rows: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(120))
    content: Mapped[str] = mapped_column(Text)
