"""The bot's own checks: database, migrations, Stripe, Slack, the scheduler's
heartbeat, the newest Stripe webhook, and which secrets are set.

Secrets are only ever reported as "set" or "missing". Network checks take no
session and may run concurrently; session checks run one after another on the
caller's session (an AsyncSession is not shared between tasks, and on SQLite a
second connection would wait behind the caller's write transaction).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ..db import head_revision
from ..deliveries import read_state as read_slack_state
from ..durations import format_duration
from ..models import OutgoingMessage, WorkerHeartbeat
from ..settings import Settings
from ..slack.client import make_web_client
from .probes import _connect_failure, ssl_context

NETWORK_TIMEOUT = 5.0  # seconds, for each of the Stripe and Slack calls
STRIPE_API = "https://api.stripe.com"
WEBHOOKS_STALE = timedelta(hours=24)  # SPEC §4 reconcile: no event for 24h = stale

# The Slack scopes the app manifest asks for; read from manifest.json when it is beside the package.
DEFAULT_SCOPES = ["commands", "chat:write", "chat:write.public", "app_mentions:read", "users:read",
                  "channels:history", "groups:history", "files:write", "reactions:read", "channels:manage"]
MANIFEST = Path(__file__).resolve().parents[2] / "manifest.json"


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "fail"


# (data, headers) of Slack's auth.test; raises on failure.
SlackAuthTest = Callable[[], Awaitable[tuple[dict[str, Any], Any]]]


@dataclass
class SlackIdentity:
    check: Check
    scopes: list[str] | None = None  # granted scopes, when auth.test answered
    extra: dict[str, Any] = field(default_factory=dict)


def secrets_presence(settings: Settings) -> list[tuple[str, str]]:
    """Each secret setting by name: "set" or "missing" — never a value."""
    return [(name, "set" if value is not None and value.get_secret_value() else "missing")
            for name, value in settings.env.secrets().items()]


def key_mode(settings: Settings) -> str | None:
    """test | live | unknown, from the Stripe key's prefix; None when no key is set."""
    key = settings.env.stripe_secret_key
    if key is None or not key.get_secret_value():
        return None
    raw = key.get_secret_value()
    for prefix, mode in (("sk_test_", "test"), ("rk_test_", "test"), ("sk_live_", "live"), ("rk_live_", "live")):
        if raw.startswith(prefix):
            return mode
    return "unknown"


# --- session checks ---------------------------------------------------------------

async def database_check(session: AsyncSession) -> Check:
    try:
        await session.execute(text("SELECT 1"))
    except Exception as exc:
        return Check("database", "fail", f"unreachable ({type(exc).__name__})",
                     "check DATABASE_URL and that the server is up")
    return Check("database", "pass", f"reachable ({session.bind.dialect.name})")


async def _has_table(session: AsyncSession, table: str) -> list[str] | None:
    """The table's column names, or None when it does not exist."""

    def look(sync_session):
        inspector = inspect(sync_session.connection())
        if not inspector.has_table(table):
            return None
        return [c["name"] for c in inspector.get_columns(table)]

    return await session.run_sync(look)


async def migrations_check(session: AsyncSession) -> Check:
    head = head_revision()
    fix = "run `revops db upgrade`"
    try:
        if await _has_table(session, "alembic_version") is None:
            return Check("migrations", "fail", f"not migrated (head is {head})", fix)
        current = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except Exception as exc:
        return Check("migrations", "fail", f"could not be read ({type(exc).__name__})", fix)
    if current != head:
        return Check("migrations", "fail", f"at {current}, head is {head}", fix)
    return Check("migrations", "pass", f"at head ({head})")


async def heartbeat_check(session: AsyncSession, settings: Settings, now: datetime) -> Check:
    newest = (await session.execute(select(func.max(WorkerHeartbeat.beat_at)))).scalar()
    fix = "run `revops worker` (or `revops serve --with-worker`)"
    if newest is None:
        return Check("scheduler", "warn", "no heartbeat yet: no worker has run", fix)
    if newest.tzinfo is None:  # SQLite's max() comes back without the type's conversion
        newest = newest.replace(tzinfo=timezone.utc)
    age = max(now - newest, timedelta(0))
    limit = max(3 * settings.env.revops_tick, timedelta(minutes=1))
    detail = f"last heartbeat {format_duration(age)} ago"
    if age > limit:
        return Check("scheduler", "warn", detail + f" (expected every {format_duration(settings.env.revops_tick)})", fix)
    return Check("scheduler", "pass", detail)


async def webhook_check(session: AsyncSession, now: datetime) -> Check:
    """Age of the newest Stripe webhook, read defensively from the billing table."""
    columns = await _has_table(session, "stripe_events")
    if not columns or "received_at" not in columns:
        return Check("stripe webhooks", "pass", "no webhooks yet")
    newest = (await session.execute(text("SELECT max(received_at) FROM stripe_events"))).scalar()
    if newest is None:
        return Check("stripe webhooks", "pass", "no webhooks yet")
    newest = _as_utc(newest)
    if newest is None:
        return Check("stripe webhooks", "warn", "newest webhook time unreadable")
    age = max(now - newest, timedelta(0))
    detail = f"newest {format_duration(age)} ago"
    if age > WEBHOOKS_STALE:
        return Check("stripe webhooks", "warn", detail + " (stale: none for 24h)",
                     "check the webhook endpoint in the Stripe dashboard")
    return Check("stripe webhooks", "pass", detail)


def _as_utc(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# --- network checks ---------------------------------------------------------------

async def stripe_check(settings: Settings, timeout: float = NETWORK_TIMEOUT) -> Check:
    """Reachability and key mode from one cheap authenticated call (the key never leaves the header)."""
    mode = key_mode(settings)
    if mode is None:
        return Check("stripe", "fail", "STRIPE_SECRET_KEY missing", "set STRIPE_SECRET_KEY")
    base = (settings.env.stripe_api_base or STRIPE_API).rstrip("/")
    key = settings.env.stripe_secret_key.get_secret_value()
    try:
        async with asyncio.timeout(timeout):
            async with httpx.AsyncClient(verify=ssl_context(), timeout=httpx.Timeout(timeout)) as client:
                response = await client.get(f"{base}/v1/customers", params={"limit": 1},
                                            headers={"Authorization": f"Bearer {key}"})
    except (TimeoutError, httpx.TimeoutException):
        return Check("stripe", "fail", f"unreachable (timed out after {timeout:g}s); key mode {mode}",
                     "check STRIPE_API_BASE and the network")
    except httpx.HTTPError as exc:
        return Check("stripe", "fail", f"unreachable ({_words(exc)}); key mode {mode}",
                     "check STRIPE_API_BASE and the network")
    if response.status_code == 200:
        return Check("stripe", "pass", f"reachable, {mode} mode")
    if response.status_code in (401, 403):
        return Check("stripe", "fail", f"reachable, but the key was refused (HTTP {response.status_code}); "
                     f"key mode {mode}", "set a valid STRIPE_SECRET_KEY")
    return Check("stripe", "warn", f"answered HTTP {response.status_code}; key mode {mode}",
                 "see status.stripe.com")


def _words(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return _connect_failure(exc)
    return type(exc).__name__


def default_slack_auth_test(settings: Settings) -> SlackAuthTest:
    """auth.test through the bot's own Slack Web API client (SLACK_API_URL honoured)."""

    async def call():
        client = make_web_client(settings)
        response = await client.auth_test()
        return response.data, response.headers

    return call


async def slack_check(settings: Settings, auth_test: SlackAuthTest | None = None,
                      timeout: float = NETWORK_TIMEOUT) -> SlackIdentity:
    if settings.env.slack_bot_token is None:
        return SlackIdentity(Check("slack", "fail", "SLACK_BOT_TOKEN missing", "set SLACK_BOT_TOKEN"))
    auth_test = auth_test or default_slack_auth_test(settings)
    try:
        async with asyncio.timeout(timeout):
            data, headers = await auth_test()
    except TimeoutError:
        return SlackIdentity(Check("slack", "fail", f"auth.test timed out after {timeout:g}s",
                                   "check SLACK_API_URL and the network"))
    except Exception as exc:
        return SlackIdentity(Check("slack", "fail", f"auth.test failed ({_slack_error(exc)})",
                                   "check SLACK_BOT_TOKEN (reinstall the app if it was revoked)"))
    if not isinstance(data, dict) or not data.get("ok"):
        error = data.get("error", "not ok") if isinstance(data, dict) else "not ok"
        return SlackIdentity(Check("slack", "fail", f"auth.test failed ({_clean(error)})",
                                   "check SLACK_BOT_TOKEN (reinstall the app if it was revoked)"))
    raw = None
    if headers is not None:
        raw = headers.get("x-oauth-scopes") or headers.get("X-OAuth-Scopes")
    scopes = [s.strip() for s in raw.split(",") if s.strip()] if raw else None
    team = _clean(str(data.get("team") or data.get("team_id") or "?"))
    return SlackIdentity(Check("slack", "pass", f"auth.test ok (workspace {team})"), scopes)


def _slack_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    try:
        error = response.get("error") if response is not None else None
    except Exception:
        error = None
    if error:
        return _clean(str(error))
    if isinstance(exc, (OSError, ConnectionError)) or "connect" in type(exc).__name__.lower():
        return "Slack is unreachable"
    return type(exc).__name__


def _clean(value: str) -> str:
    return "".join(ch for ch in value if ch.isalnum() or ch in "_-. ")[:60]


def manifest_scopes() -> list[str]:
    try:
        data = json.loads(MANIFEST.read_text(encoding="utf-8"))
        scopes = data["oauth_config"]["scopes"]["bot"]
        if isinstance(scopes, list) and all(isinstance(s, str) for s in scopes):
            return scopes
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return list(DEFAULT_SCOPES)


async def slack_posts_check(session: AsyncSession, now: datetime) -> Check:
    """Whether posts reach Slack: sending paused (the app uninstalled, its token revoked), the
    posts waiting, and those Slack refused for good in the last 24 h."""
    state = await read_slack_state(session)
    pending = (await session.execute(select(func.count()).select_from(OutgoingMessage)
                                     .where(OutgoingMessage.status == "pending"))).scalar_one()
    waiting = f"{pending} post(s) waiting"
    if state.paused is not None:
        return Check("slack posts", "fail", f"{state.describe()}; {waiting}",
                     "reinstall the app (or set a new SLACK_BOT_TOKEN); sending resumes once auth.test works "
                     "(preflight checks it)")
    refused = (await session.execute(
        select(OutgoingMessage.channel, OutgoingMessage.error).where(
            OutgoingMessage.status == "failed", OutgoingMessage.created_at >= now - timedelta(hours=24))
        .order_by(OutgoingMessage.id.desc()))).all()
    if refused:
        channel, error = refused[0]
        return Check("slack posts", "warn",
                     f"sending; {waiting}; {len(refused)} refused by Slack in the last 24 h "
                     f"(latest to #{channel}: {error})",
                     "invite the bot to the channel, or see the audit log (slack.delivery)")
    return Check("slack posts", "pass", f"sending; {waiting}")
