"""Dry-run and panic: one row, read by every request, changed only by admins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Flags


@dataclass(frozen=True)
class FlagState:
    dry_run: bool
    panic: bool
    updated_at: datetime | None
    updated_by: str | None

    def as_json(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "panic": self.panic,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by,
        }


_FLAGS = select(Flags).where(Flags.id == 1)  # built once: every action that changes things reads it


async def read_flags(session: AsyncSession) -> FlagState:
    row = (await session.execute(_FLAGS)).scalar_one()
    return FlagState(row.dry_run, row.panic, row.updated_at, row.updated_by)


async def set_flag(session: AsyncSession, name: str, value: bool, *, actor: str, at: datetime) -> bool:
    """Set dry_run or panic; returns whether it changed."""
    assert name in ("dry_run", "panic")
    row = (await session.execute(select(Flags).where(Flags.id == 1).with_for_update())).scalar_one()
    if getattr(row, name) == value:
        return False
    setattr(row, name, value)
    row.updated_at = at
    row.updated_by = actor
    await session.flush()
    return True
