"""HMAC-signed, expiring links to the incident pages.

The key is derived from SLACK_SIGNING_SECRET (always set where the bot posts to
Slack), or REVOPS_ADMIN_API_KEY when there is no signing secret; rotating that
secret invalidates every link handed out. The signature covers the path and the
expiry, so a link opens one page only, until it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta
from urllib.parse import urlencode

from ..settings import Settings

LINK_TTL = timedelta(days=7)
_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIG = re.compile(r"[0-9a-f]{64}")
_CONTEXT = b"revops incident page links v1"


def _key(settings: Settings) -> bytes | None:
    secret = settings.env.slack_signing_secret or settings.env.revops_admin_api_key
    if secret is None:
        return None
    return hmac.new(secret.get_secret_value().encode(), _CONTEXT, hashlib.sha256).digest()


def _signature(key: bytes, path: str, expires: int) -> str:
    return hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_query(settings: Settings, path: str, now: datetime, ttl: timedelta = LINK_TTL) -> str | None:
    key = _key(settings)
    if key is None:
        return None
    expires = int((now + ttl).timestamp())
    return urlencode({"exp": expires, "sig": _signature(key, path, expires)})


def signed_url(settings: Settings, path: str, now: datetime, ttl: timedelta = LINK_TTL) -> str | None:
    """The page's public URL with a signature, or None when no secret or REVOPS_BASE_URL is set."""
    query = signed_query(settings, path, now, ttl)
    base = settings.env.revops_base_url
    if query is None or not base:
        return None
    return f"{base.rstrip('/')}{path}?{query}"


def verify(settings: Settings, path: str, exp: str | None, sig: str | None, now: datetime) -> bool:
    key = _key(settings)
    # ASCII only, bounded: `exp=²` passes str.isdigit, a 5,000-digit one is past int()'s limit, and
    # compare_digest refuses non-ASCII text: each was a 500, and is a 403 now.
    if key is None or not exp or not sig or not _EXPIRES.fullmatch(exp) or not _SIG.fullmatch(sig):
        return False
    if not hmac.compare_digest(_signature(key, path, int(exp)), sig):
        return False
    return int(exp) >= now.timestamp()
