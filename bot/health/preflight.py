"""The go-live checklist, shared by `/revops preflight` and `revops preflight`.

Each check is pass / warn / fail with a one-line fix. Secrets are only ever
"set" or "missing". `revops preflight` exits non-zero on any fail, for deploy
pipelines.
"""

from __future__ import annotations

from typing import Any, Mapping

from sqlalchemy.ext.asyncio import AsyncSession

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
)

# Secrets the bot cannot go live without; the webhook secret has its own line.
REQUIRED_SECRETS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "STRIPE_SECRET_KEY", "REVOPS_ADMIN_API_KEY",
                    "REVOPS_ALERTS_TOKEN")


async def run_preflight(settings: Settings, session: AsyncSession | None, *,
                        templates: Mapping[str, Mapping[str, Any]],
                        slack_auth_test: SlackAuthTest | None = None,
                        database_error: str | None = None) -> list[Check]:
    """Every check, in checklist order. `session=None` means the database could not be
    reached (`database_error` says how); the checks that need it then fail."""
    slack = await slack_check(settings, slack_auth_test)  # before the session work: no lock held on the network
    checks = [settings_check(settings), webhook_secret_check(settings), key_mode_check(settings),
              database_kind_check(settings)]
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
