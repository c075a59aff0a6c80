"""A signed delivery's body as an event the database can store, whatever Stripe (or a bug) put in it.

`read_event(body, now)` raises ValueError only when the body is not JSON (or not a JSON object):
everything else becomes an event dict that can be written on both databases, and when it could
not be taken as it is, its `revops.problem` says why (the event is then stored as `failed` with
that reason, answered 200 so Stripe stops retrying, and `replay` can try again after a fix):

    NUL characters          replaced with U+FFFD (PostgreSQL text cannot hold them)
    NaN / Infinity          replaced with null (not JSON; PostgreSQL refuses them)
    nested over MAX_DEPTH   (or too deep for the parser) the body is kept as text under `revops.body`
    an id over 255 chars    shortened, with a digest of the whole id so duplicates still match
    no evt_ id              an id made from the body's digest
    no type, no data        stored under `unknown` / without data
    created                 an integer or (a thin event's) ISO 8601 string, within 2009 … now + 1 day

`revops` is the bot's own key in a stored payload (Stripe sends none): `problem`, and what
fetch.py fetched before the transaction (`fetched`, `fetch_error`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

REVOPS = "revops"
MAX_DEPTH = 64
MAX_ID = 255
MAX_KEPT_BODY = 65_536
# Stripe started in 2010: anything earlier, or more than a day ahead of us, is not a real event time.
EARLIEST = datetime(2009, 1, 1, tzinfo=timezone.utc)
FUTURE_SLACK = timedelta(days=1)

_ID_IN_BODY = re.compile(r'"id"\s*:\s*"(evt_[A-Za-z0-9_]{1,200})"')
_TYPE_IN_BODY = re.compile(r'"type"\s*:\s*"([a-z0-9_.]{1,100})"')


class _Cleaner:
    """Walks a parsed body, replacing what no database row can hold, and says what it replaced."""

    def __init__(self):
        self.nul = False
        self.not_finite = False
        self.too_deep = False

    def clean(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            self.too_deep = True
            return None
        if isinstance(value, str):
            if "\x00" in value:
                self.nul = True
                return value.replace("\x00", "\ufffd")
            return value
        if isinstance(value, float) and not math.isfinite(value):
            self.not_finite = True
            return None
        if isinstance(value, dict):
            return {self.clean(str(k), depth + 1): self.clean(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.clean(v, depth + 1) for v in value]
        return value


def digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text).hexdigest()


def safe_id(raw: str) -> str:
    """An id that fits the column: itself when it does, else its start and a digest of all of it."""
    if len(raw) <= MAX_ID:
        return raw
    return f"{raw[:MAX_ID - 41]}~{digest(raw)[:40]}"


def created_time(value: Any) -> datetime | None:
    """An event's `created` (epoch seconds, or a thin event's ISO 8601) as a datetime; None if unreadable."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return datetime.fromtimestamp(value, tz=timezone.utc)
        if isinstance(value, str) and value:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def plausible(created: datetime | None, now: datetime) -> bool:
    return created is not None and EARLIEST <= created <= now + FUTURE_SLACK


def _unreadable(text: str, why: str) -> dict[str, Any]:
    """A body the parser could not walk (nested too deep): kept as text, stored as failed."""
    found_id = _ID_IN_BODY.search(text)
    found_type = _TYPE_IN_BODY.search(text)
    kept = text[:MAX_KEPT_BODY].replace("\x00", "\ufffd")
    return {"id": found_id.group(1) if found_id else f"evt_unidentified_{digest(text)[:32]}",
            "type": found_type.group(1) if found_type else "unknown", "data": {},
            REVOPS: {"problem": why, "body": kept}}


def read_event(body: bytes, now: datetime) -> dict[str, Any]:
    """The event to store (see the module docstring); ValueError when the body is not JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not JSON (not UTF-8)") from None
    try:
        parsed = json.loads(text)
    except RecursionError:
        return _unreadable(text, "the body is nested too deep to read; stored as text, not applied")
    except ValueError:
        raise ValueError("body is not JSON") from None
    if not isinstance(parsed, dict):
        raise ValueError("body is not a JSON object")
    cleaner = _Cleaner()
    try:
        event = cleaner.clean(parsed)
    except RecursionError:
        return _unreadable(text, "the body is nested too deep to read; stored as text, not applied")
    problems: list[str] = []
    if cleaner.too_deep:
        return _unreadable(text, f"the body is nested more than {MAX_DEPTH} deep; stored as text, not applied")
    if cleaner.nul:
        problems.append("it holds NUL characters (stored as U+FFFD)")
    if cleaner.not_finite:
        problems.append("it holds NaN or Infinity (stored as null)")
    raw_id = event.get("id")
    if not isinstance(raw_id, str) or not raw_id.startswith("evt_"):
        event["id"] = f"evt_unidentified_{digest(text)[:32]}"
        problems.append("it has no evt_ id (stored under one made from the body's digest)")
    elif len(raw_id) > MAX_ID:
        event["id"] = safe_id(raw_id)
        problems.append(f"its id is {len(raw_id)} characters long (stored shortened)")
    if not isinstance(event.get("type"), str) or not event["type"]:
        event["type"] = "unknown"
        problems.append("it has no type")
    elif len(event["type"]) > 100:
        problems.append("its type is longer than 100 characters")
    thin = event.get("object") == "v2.core.event"
    if not thin and not (isinstance(event.get("data"), dict) and isinstance(event["data"].get("object"), dict)):
        problems.append("it has no data object")
    for key in ("api_version", "account"):  # strings or absent in every Stripe event
        if event.get(key) is not None and not isinstance(event[key], str):
            problems.append(f"its {key} is not a string (stored as null)")
            event[key] = None
    if "livemode" in event and not isinstance(event["livemode"], bool):
        problems.append("its livemode is not true or false")
    created = created_time(event.get("created"))
    if not plausible(created, now):
        problems.append(f"its created time {str(event.get('created'))[:40]!r} is not a plausible time")
    if problems:
        event[REVOPS] = {"problem": "not applied: " + "; ".join(problems)}
    return event


def storable(event: dict[str, Any], now: datetime) -> dict[str, Any]:
    """An event that came from the Stripe API (a replay, reconcile), made storable as a delivery is."""
    try:
        body = json.dumps(event, allow_nan=True).encode()
    except (TypeError, ValueError, RecursionError):
        body = json.dumps({key: event.get(key) for key in ("id", "type", "created") if key in event}).encode()
    return read_event(body, now)


def problem(event: dict[str, Any]) -> str | None:
    return (event.get(REVOPS) or {}).get("problem") if isinstance(event.get(REVOPS), dict) else None


def annotations(event: dict[str, Any]) -> dict[str, Any]:
    value = event.get(REVOPS)
    return value if isinstance(value, dict) else {}
