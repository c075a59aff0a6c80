"""Sizes written as `65536`, `64KiB` or `1MiB`, and the HTTP body limits per endpoint."""

from __future__ import annotations

import re

KIB, MIB = 1024, 1024 * 1024
# The largest body each endpoint takes; "*" is every other path.
DEFAULT_BODY_LIMITS = {"/slack/events": MIB, "/webhooks/stripe": MIB, "/alerts": 64 * KIB, "*": 64 * KIB}

_SIZE = re.compile(r"\s*([0-9]{1,12})\s*(b|kb|kib|k|mb|mib|m)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB}


def parse_size(text: str) -> int:
    """`65536`, `64KiB`, `1MiB` → bytes; ValueError otherwise."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"expected a size such as 65536, 64KiB or 1MiB, got {text[:40]!r}")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


def parse_body_limits(text: str) -> dict[str, int]:
    """`/alerts=64KiB,/slack/events=2MiB,*=16KiB`, over the defaults."""
    limits = dict(DEFAULT_BODY_LIMITS)
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        path, eq, size = part.partition("=")
        path = path.strip()
        if not eq or not (path.startswith("/") or path == "*"):
            raise ValueError(f"expected PATH=SIZE such as /alerts=64KiB, got {part[:60]!r}")
        limits[path] = parse_size(size)
    return limits
