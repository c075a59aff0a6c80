"""The audit log: append-only, hash-chained, checkable.

Each record's hash covers its own fields and the previous record's hash, and the
single `audit_head` row holds the last id and hash (and serialises appends with
a row lock on PostgreSQL; SQLite write transactions are already serial). An
altered record, a removed record, or a removed tail all break verification.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .durations import format_duration
from .models import AuditHead, AuditRecord

GENESIS = "0" * 64


def jsonable(value: Any) -> Any:
    """Arguments as JSON: durations as "1h", datetimes as ISO text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, timedelta):
        return format_duration(value).replace(" ", "")
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _digest(record_id: int, prev_hash: str, at: datetime, actor: str, command: str, args: Any, outcome: str,
            channel: str | None, surface: str, detail: str | None, subject: str | None) -> str:
    body = json.dumps(
        [record_id, prev_hash, at.isoformat(timespec="microseconds"), actor, command, args, outcome, channel,
         surface, detail, subject],
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def record_digest(rec: AuditRecord) -> str:
    return _digest(rec.id, rec.prev_hash, rec.at, rec.actor, rec.command, rec.args, rec.outcome, rec.channel,
                   rec.surface, rec.detail, rec.subject)


async def append(session: AsyncSession, *, at: datetime, actor: str, command: str, args: dict[str, Any],
                 outcome: str, channel: str | None, surface: str, detail: str | None = None,
                 subject: str | None = None) -> AuditRecord:
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())).scalar_one()
    # Microsecond precision survives both databases, so the digest is stable.
    at = at.replace(microsecond=at.microsecond)
    rec = AuditRecord(
        id=head.last_id + 1, at=at, actor=actor, command=command[:200], args=jsonable(args), outcome=outcome[:32],
        channel=channel, surface=surface, detail=detail, subject=(subject or None) and subject[:200],
        prev_hash=head.last_hash,
    )
    rec.hash = record_digest(rec)
    session.add(rec)
    head.last_id = rec.id
    head.last_hash = rec.hash
    head.count = head.count + 1
    await session.flush()
    return rec


@dataclass
class ChainCheck:
    ok: bool
    checked: int
    problem: str | None = None

    def sentence(self) -> str:
        if self.ok:
            return f"audit chain verifies ({self.checked} records)"
        return f"audit chain BROKEN: {self.problem}"


async def verify(session: AsyncSession, batch: int = 1000) -> ChainCheck:
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    prev_hash = GENESIS
    expected_id = 1
    checked = 0
    last_id = 0
    while True:
        rows = (await session.execute(
            select(AuditRecord).where(AuditRecord.id > last_id).order_by(AuditRecord.id).limit(batch)
        )).scalars().all()
        if not rows:
            break
        for rec in rows:
            if rec.id != expected_id:
                return ChainCheck(False, checked, f"record #{expected_id} is missing")
            if rec.prev_hash != prev_hash:
                return ChainCheck(False, checked, f"record #{rec.id} does not follow record #{rec.id - 1}")
            if record_digest(rec) != rec.hash:
                return ChainCheck(False, checked, f"record #{rec.id} was altered")
            prev_hash = rec.hash
            expected_id += 1
            checked += 1
            last_id = rec.id
    if checked != head.count or head.last_hash != prev_hash or head.last_id != last_id:
        return ChainCheck(False, checked, f"the log ends at #{last_id} but {head.count} records were written")
    return ChainCheck(True, checked)


async def search(session: AsyncSession, *, actor: str | None = None, subject: str | None = None,
                 since: datetime | None = None, limit: int = 20,
                 subjects: set[str] | None = None) -> list[AuditRecord]:
    """Newest first; `subjects`: any of these names (an account's id, cus_… and email)."""
    query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditRecord.actor == actor)
    if subject:
        query = query.where(AuditRecord.subject == subject)
    if subjects:
        query = query.where(AuditRecord.subject.in_(sorted(subjects)))
    if since:
        query = query.where(AuditRecord.at >= since)
    return list((await session.execute(query)).scalars().all())
