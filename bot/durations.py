"""Durations written as "90s", "15m", "1h", "1d" (and combinations like "1h30m")."""

import re
from datetime import timedelta

_PART = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(ms|s|m|h|d|w)")  # ASCII digits, bounded
# Past this a duration names nothing the bot measures (and timedelta's own limit, 999,999,999 days,
# is an OverflowError, not an answer).
LONGEST = timedelta(days=3650)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """Parse a duration string; raise ValueError with a short reason."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a duration such as \"90s\", \"15m\" or \"1h\", got {value!r}")
    if isinstance(value, (int, float)):
        if value != value or value < 0:
            raise ValueError("a duration cannot be negative")
        if value > LONGEST.total_seconds():
            raise ValueError(f"a duration can be at most {format_duration(LONGEST)}")
        return timedelta(seconds=value)
    text = value.strip().lower().replace(" ", "")
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"expected a duration such as \"90s\", \"15m\" or \"1h\", got {value[:40]!r}")
    if total > LONGEST.total_seconds():
        raise ValueError(f"a duration can be at most {format_duration(LONGEST)}, got {value[:40]!r}")
    return timedelta(seconds=total)


def bounded(low: timedelta | None, high: timedelta):
    """A pydantic check that a setting's duration lies within [low, high] (None: above zero)."""
    def check(value: timedelta | None) -> timedelta | None:
        if value is None:
            return value
        if (low is None and value <= timedelta(0)) or (low is not None and value < low):
            raise ValueError(f"must be at least {format_duration(low) if low else 'more than 0s'}")
        if value > high:
            raise ValueError(f"must be at most {format_duration(high)}, got {format_duration(value)}")
        return value
    return check


def format_duration(delta: timedelta) -> str:
    """A short human form: 45s, 15m, 1h 5m, 2d 3h."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "-" + format_duration(-delta)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m" + (f" {sec}s" if sec and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h" + (f" {minutes}m" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days}d" + (f" {hours}h" if hours else "")
