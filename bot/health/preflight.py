"""The go-live checklist, shared by `/revops preflight` and `revops preflight`.

Each check is pass / warn / fail with a one-line fix. Secrets are only ever
"set" or "missing". `revops preflight` exits non-zero on any fail, for deploy
pipelines.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Mapping

import stripe as stripe_sdk
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..billing.models import StripeEvent
from ..billing.policy import EventPolicy, key_livemode
from ..billing.stripe_client import StripeClient
from ..errors import UpstreamError
from ..flags import read_flags
from ..settings import Settings
from ..templating import render_check
from .selfcheck import (
    Check,
    SlackAuthTest,
    _has_table,
    database_check,
    key_mode,
    manifest_scopes,
    migrations_check,
    secrets_presence,
    slack_check,
    slack_posts_check,
)

# Secrets the bot cannot go live without; the webhook secret has its own line.
REQUIRED_SECRETS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "STRIPE_SECRET_KEY", "REVOPS_ADMIN_API_KEY",
                    "REVOPS_ALERTS_TOKEN")


async def run_preflight(settings: Settings, session: AsyncSession | None, *,
                        templates: Mapping[str, Mapping[str, Any]],
                        slack_auth_test: SlackAuthTest | None = None,
                        database_error: str | None = None, stripe: StripeClient | None = None,
                        now: datetime | None = None,
                        token_works: Callable[[], Awaitable[None]] | None = None) -> list[Check]:
    """Every check, in checklist order. `session=None` means the database could not be
    reached (`database_error` says how); the checks that need it then fail. `stripe` reads the
    webhook endpoints' API version (one is made from the settings when not given). `token_works`
    is called when auth.test passes: sending to Slack, if paused, resumes (before the checks read it)."""
    slack = await slack_check(settings, slack_auth_test)  # before the session work: no lock held on the network
    if slack.check.ok and token_works is not None:
        await token_works()
    endpoints = await webhook_endpoints(settings, stripe)  # likewise
    checks = [settings_check(settings), webhook_secret_check(settings), key_mode_check(settings),
              api_version_check(settings, *endpoints), database_kind_check(settings)]
    if session is None:
        why = database_error or "unreachable"
        checks.append(Check("database", "fail", why, "check DATABASE_URL and that the server is up"))
        checks.append(Check("migrations", "fail", "not checked: the database is unreachable", "run `revops db upgrade`"))
        checks.append(Check("flags", "fail", "not checked: the database is unreachable", "fix the database first"))
    else:
        db = await database_check(session)
        checks.append(db)
        migrations = await migrations_check(session) if db.ok else \
            Check("migrations", "fail", "not checked: the database is unreachable", "run `revops db upgrade`")
        checks.append(migrations)
        checks.extend(await flag_checks(session))
        if migrations.ok:
            checks.append(await stripe_events_check(session, settings, now or datetime.now(timezone.utc)))
            checks.append(await slack_posts_check(session, now or datetime.now(timezone.utc)))
    checks.append(roles_check(settings))
    checks.append(templates_check(settings, templates))
    checks.append(scopes_check(slack))
    checks.append(services_check(settings))
    return checks


def settings_check(settings: Settings) -> Check:
    presence = dict(secrets_presence(settings))
    missing = [name for name in REQUIRED_SECRETS if presence.get(name) != "set"]
    if missing:
        return Check("settings", "fail", "missing: " + ", ".join(missing),
                     "set " + ", ".join(missing) + " in the environment")
    soft = []
    if not settings.env.revops_base_url:
        soft.append("REVOPS_BASE_URL")
    if not settings.cfg.slack.incident_channel:
        soft.append("[slack] incident_channel")
    if soft:
        return Check("settings", "warn", f"required settings set; not set: {', '.join(soft)}",
                     "set them so links work and automated posts have a channel")
    return Check("settings", "pass", f"all {len(REQUIRED_SECRETS)} required secrets set, base URL and incident channel set")


def webhook_secret_check(settings: Settings) -> Check:
    if dict(secrets_presence(settings)).get("STRIPE_WEBHOOK_SECRET") == "set":
        return Check("webhook secret", "pass", "STRIPE_WEBHOOK_SECRET set")
    return Check("webhook secret", "fail", "STRIPE_WEBHOOK_SECRET missing: webhooks would all be refused",
                 "set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_…) from the Stripe dashboard")


def key_mode_check(settings: Settings) -> Check:
    env = settings.env.revops_env
    mode = key_mode(settings)
    if mode is None:
        return Check("stripe key mode", "fail", "STRIPE_SECRET_KEY missing", "set STRIPE_SECRET_KEY")
    if mode == "unknown":
        return Check("stripe key mode", "warn", "the key is neither a test nor a live key (sk_/rk_ prefix)",
                     "use a secret (sk_) or restricted (rk_) Stripe key")
    if mode == "live" and env != "production":
        return Check("stripe key mode", "fail", f"live key with REVOPS_ENV={env}: live keys only in production",
                     "use an sk_test_ key here, or set REVOPS_ENV=production")
    if mode == "test" and env == "production":
        return Check("stripe key mode", "fail", "test key with REVOPS_ENV=production: no real payments",
                     "set the sk_live_ key in production")
    return Check("stripe key mode", "pass", f"{mode} key, REVOPS_ENV={env}")


async def webhook_endpoints(settings: Settings, stripe: StripeClient | None) -> tuple[list[dict] | None, str | None]:
    """The account's webhook endpoints, or why they could not be read (a restricted key, say)."""
    client = stripe or StripeClient.from_settings(settings)
    if not client.configured:
        return None, "STRIPE_SECRET_KEY missing"
    try:
        return await client.webhook_endpoints(), None
    except UpstreamError as exc:
        return None, str(exc).removesuffix("; nothing was changed")
    finally:
        if stripe is None:
            await client.aclose()


def endpoint_fix(pinned: str) -> str:
    return (f"an endpoint's API version is set when it is made: add a new endpoint at API version {pinned} "
            f"(Dashboard → Developers → Webhooks → Add destination → API version {pinned}, or `stripe "
            f"webhook_endpoints create --url https://…/webhooks/stripe --api-version {pinned} …`), set "
            "STRIPE_WEBHOOK_SECRET to its signing secret, then disable the old endpoint")


def api_version_check(settings: Settings, endpoints: list[dict] | None, error: str | None) -> Check:
    """The pinned API version against the SDK's own and the webhook endpoints' versions."""
    pinned, sdk = settings.env.stripe_api_version, stripe_sdk.api_version
    problems, fixes = [], []
    if pinned != sdk:
        problems.append(f"STRIPE_API_VERSION {pinned} is not the SDK's own ({sdk}, stripe {stripe_sdk.VERSION})")
        fixes.append("unset STRIPE_API_VERSION (the SDK's own is the default) or install the SDK built for it")
    if endpoints is None:
        detail = f"calls send {pinned}; webhook endpoints not read ({error})"
        if problems:
            return Check("API version", "warn", "; ".join(problems) + f"; {detail}", "; ".join(fixes))
        return Check("API version", "warn", detail,
                     "give the key read access to webhook endpoints, or check each endpoint's API version in "
                     f"the Dashboard is {pinned}")
    active = [e for e in endpoints if e.get("status") != "disabled"]
    differing = [e for e in active if e.get("api_version") != pinned]
    for endpoint in differing:
        version = endpoint.get("api_version") or "the account's default"
        problems.append(f"webhook endpoint {endpoint.get('id')} ({str(endpoint.get('url'))[:80]}) sends {version}")
    if differing:
        fixes.append(endpoint_fix(pinned))
    if problems:
        return Check("API version", "warn", "; ".join(problems) + f" (the bot reads {pinned})", "; ".join(fixes))
    return Check("API version", "pass", f"calls send {pinned}, the SDK's own; "
                                               f"{len(active)} webhook endpoint(s) at {pinned}")


async def stripe_events_check(session: AsyncSession, settings: Settings, now: datetime,
                              window: timedelta = timedelta(days=7)) -> Check:
    """Stored events of the last week rendered at another API version, in the other mode than the
    key's, or from connected accounts not listed (health and preflight)."""
    columns = await _has_table(session, "stripe_events")  # a database behind on migrations: said, not raised
    if not columns or not {"api_version", "account"} <= set(columns):
        return Check("event log", "warn", "not checked: the events table predates migration 0008",
                     "run `revops db upgrade`")
    return await _stripe_events_check(session, settings, now, window)


async def _stripe_events_check(session: AsyncSession, settings: Settings, now: datetime, window: timedelta) -> Check:
    policy = EventPolicy.from_settings(settings)
    since = now - window
    recent = StripeEvent.received_at >= since
    other_version = (await session.execute(
        select(StripeEvent.api_version, func.count()).where(
            recent, StripeEvent.api_version.is_not(None), StripeEvent.api_version != policy.api_version)
        .group_by(StripeEvent.api_version).order_by(func.count().desc()).limit(3))).all()
    parts, fixes = [], []
    if other_version:
        shown = ", ".join(f"{n} at {version}" for version, n in other_version)
        parts.append(f"events in another API version than {policy.api_version}: {shown}")
        fixes.append(endpoint_fix(policy.api_version))
    livemode = key_livemode(settings.env.stripe_secret_key.get_secret_value()
                            if settings.env.stripe_secret_key is not None else None)
    if livemode is not None:
        wrong_mode = (await session.execute(select(func.count()).select_from(StripeEvent).where(
            recent, StripeEvent.livemode.is_(not livemode)))).scalar_one()
        if wrong_mode:
            mode, key = ("live", "test") if not livemode else ("test", "live")
            parts.append(f"{wrong_mode} {mode}-mode event(s) ignored: the key is a {key}-mode key")
            fixes.append(f"point the {mode}-mode webhook endpoint at the bot that holds the {mode}-mode key")
    accounts = (await session.execute(select(func.count()).select_from(StripeEvent).where(
        recent, StripeEvent.account.is_not(None), StripeEvent.status == "ignored",
        StripeEvent.account.not_in(sorted(policy.accounts)) if policy.accounts else StripeEvent.account.is_not(None)
    ))).scalar_one()
    if accounts:
        parts.append(f"{accounts} event(s) of connected accounts not in [stripe] accounts ignored")
        fixes.append("list the acct_… ids the mirror should take under [stripe] accounts, then `replay` them")
    if parts:
        return Check("event log", "warn", "last 7 days: " + "; ".join(parts), "; ".join(fixes))
    return Check("event log", "pass", f"every event of the last 7 days in {policy.api_version} and the key's mode")


def database_kind_check(settings: Settings) -> Check:
    url = settings.env.database_url
    env = settings.env.revops_env
    if url.startswith("sqlite"):
        if env == "production":
            return Check("database kind", "fail", "SQLite refused in production",
                         "set DATABASE_URL to a PostgreSQL database")
        if env == "staging":
            return Check("database kind", "warn", "SQLite in staging: production will run PostgreSQL",
                         "point staging's DATABASE_URL at PostgreSQL too")
        return Check("database kind", "pass", f"SQLite (fine for {env})")
    return Check("database kind", "pass", "PostgreSQL")


async def flag_checks(session: AsyncSession) -> list[Check]:
    try:
        exists = await _has_table(session, "flags") is not None
        state = await read_flags(session) if exists else None
    except Exception as exc:
        exists, state = False, None
        reason = f"could not be read ({type(exc).__name__})"
    else:
        reason = "not migrated"
    if state is None:
        return [Check("flags", "fail", f"dry-run and panic unknown: {reason}", "run `revops db upgrade`")]
    dry = Check("dry-run", "pass", "off") if not state.dry_run else Check(
        "dry-run", "warn", "on: every mutating action is simulated", "`/revops dryrun off` when you go live")
    panic = Check("panic", "pass", "off") if not state.panic else Check(
        "panic", "warn", "on: automation is paused (no auto-posts, escalations, replays)", "`/revops panic off`")
    return [dry, panic]


def roles_check(settings: Settings) -> Check:
    roles = settings.cfg.roles
    admins = set(roles.admin)
    can_approve = set(roles.approver) | admins
    detail = f"{len(admins)} admin(s), {len(can_approve)} people can approve"
    problems = []
    if not admins:
        problems.append("no admin (nobody can change dry-run or panic)")
    if len(can_approve) < 2:
        problems.append("fewer than two approvers: four eyes cannot work")
    if problems:
        return Check("roles", "fail", f"{detail}: " + "; ".join(problems),
                     "list Slack user ids under [roles] admin and approver in revops.toml")
    return Check("roles", "pass", detail)


def templates_check(settings: Settings, templates: Mapping[str, Mapping[str, Any]]) -> Check:
    """Every template renders (`templates`: each family's templates with their sample data)."""
    if not templates:
        return Check("templates", "pass", "no templates yet")
    try:
        problems: Any = render_check(settings, templates)
    except Exception as exc:
        return Check("templates", "fail", f"rendering failed ({type(exc).__name__})",
                     "check templates_dir and the templates in it")
    problems = [str(p) for p in (problems or [])]
    if problems:
        more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
        return Check("templates", "fail", "; ".join(p[:120] for p in problems[:2]) + more,
                     "fix the templates named (templates_dir, or the packaged ones)")
    return Check("templates", "pass", "every template renders")


def scopes_check(slack) -> Check:
    check = slack.check
    if not check.ok:
        return Check("slack", "fail", f"{check.detail}; scopes not checked", check.fix)
    wanted = manifest_scopes()
    if slack.scopes is None:
        return Check("slack", "warn", f"{check.detail}; Slack reported no granted scopes",
                     "reinstall the app from manifest.json")
    missing = [s for s in wanted if s not in slack.scopes]
    if missing:
        return Check("slack", "fail", f"{check.detail}; scopes missing: {', '.join(missing)}",
                     "add them under OAuth & Permissions (or from manifest.json) and reinstall the app")
    return Check("slack", "pass", f"{check.detail}; all {len(wanted)} manifest scopes granted")


def services_check(settings: Settings) -> Check:
    count = len(settings.cfg.services)
    if not count:
        return Check("health checks", "warn", "no [[services]] configured",
                     "add the services' /health URLs under [[services]] in revops.toml")
    return Check("health checks", "pass", f"{count} service(s) configured")


def summary(checks: list[Check]) -> tuple[int, int, int]:
    return tuple(sum(1 for c in checks if c.status == s) for s in ("pass", "warn", "fail"))  # type: ignore[return-value]
