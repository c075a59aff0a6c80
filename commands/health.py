"""`health [NAME|all]`: probe the configured services concurrently (each bounded by
its timeout) plus, for `all`, the bot's own database, migrations, Stripe, Slack,
scheduler and webhooks; status, HTTP code, latency, p95 against the SLO, and
version drift between the environments of one service (SPEC §4).

Slow: Slack gets "Working on it…" at once and the report follows.
"""

from __future__ import annotations

import asyncio
import time

from bot.context import Context
from bot.errors import UsageError
from bot.health.history import P95, record_probes, recent_p95
from bot.health.preflight import stripe_events_check
from bot.health.probes import ProbeResult, probe_services
from bot.health.selfcheck import (
    NETWORK_TIMEOUT,
    Check,
    database_check,
    heartbeat_check,
    migrations_check,
    secrets_presence,
    slack_check,
    slack_posts_check,
    stripe_check,
    webhook_check,
)
from bot.health.views import announce_down
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Em, Icon, Status, Text, join

commands = CommandSet("health")

STATUS_ICON = {"ok": Icon("large_green_circle"), "degraded": Icon("large_yellow_circle"), "down": Icon("red_circle")}
CHECK_STATUS = {"pass": Status("ok"), "warn": Status("warning"), "fail": Status("failed")}


@commands.command("health [name]", summary="probe the services (or one by NAME) and the bot's own database, "
                  "migrations, Stripe and Slack: status, latency, p95 against the SLO, version drift",
                  role=Role.viewer, slow=True, examples=["health", "health checkout"])
async def health(ctx: Context, args: dict) -> Reply:
    settings = ctx.settings
    configured = settings.cfg.services
    wanted = (args.get("name") or "all").strip()
    whole = wanted.lower() == "all"
    if whole:
        targets = list(configured)
    else:
        targets = [s for s in configured if s.name.lower() == wanted.lower()]
        if not targets:
            names = sorted({s.name for s in configured})
            known = f"configured: {', '.join(names)}" if names else "no services are configured ([[services]] in revops.toml)"
            raise UsageError(Text("no service ", Code(wanted[:40]), f"; {known}"))

    started = time.perf_counter()
    if whole:
        gateway = ctx.services.extras.get("slack_auth_test")
        # Stripe and Slack wait no longer than the slowest service (at least 2 s, at most 5 s),
        # so the whole report stays bounded by the slowest timeout.
        bound = min(NETWORK_TIMEOUT, max([t.timeout.total_seconds() for t in targets] + [2.0]))
        results, stripe, slack = await asyncio.gather(
            probe_services(targets), stripe_check(settings, bound), slack_check(settings, gateway, bound))
    else:
        results, stripe, slack = await probe_services(targets), None, None
    elapsed = time.perf_counter() - started

    # A read: the probe history is the one thing it stores, in a short transaction after the probes.
    async with ctx.writing() as session:
        went_down = await record_probes(session, results, at=ctx.now)
        await announce_down(session, went_down, at=ctx.now, settings=settings)
        p95s = await recent_p95(session, results, at=ctx.now)
    bot_checks: list[Check] = []
    if whole:
        db = await database_check(ctx.session)
        bot_checks = [db, await migrations_check(ctx.session), stripe, slack.check,
                      await slack_posts_check(ctx.session, ctx.now),
                      await heartbeat_check(ctx.session, settings, ctx.now), await webhook_check(ctx.session, ctx.now),
                      await stripe_events_check(ctx.session, settings, ctx.now)]
    return health_reply(results, p95s, bot_checks, secrets_presence(settings) if whole else None, elapsed, whole)


def health_reply(results: list[ProbeResult], p95s: dict[tuple[str, str], P95], bot_checks: list[Check],
                 secrets: list[tuple[str, str]] | None, elapsed: float, whole: bool) -> Reply:
    counts = {s: sum(1 for r in results if r.status == s) for s in ("down", "degraded", "ok")}
    failing = [c for c in bot_checks if c.status == "fail"]
    if counts["down"] or failing:
        icon = STATUS_ICON["down"]
    elif counts["degraded"] or any(c.status == "warn" for c in bot_checks):
        icon = STATUS_ICON["degraded"]
    else:
        icon = STATUS_ICON["ok"]
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    head = ", ".join(parts) if parts else "no services configured"
    if whole:
        head += "; the bot: " + (f"{len(failing)} check(s) failing" if failing else "all checks pass")
    lines = [service_line(r, p95s.get(r.key)) for r in results]
    lines += drift_lines(results)
    if bot_checks:
        lines.append(Text(Em("The bot")))
        lines += [Text(CHECK_STATUS[c.status], " ", Em(c.name), f" — {c.detail}") for c in bot_checks]
    if secrets is not None:
        lines.append(Text(Em("Secrets"), " — " + " · ".join(f"{name} {state}" for name, state in secrets)))
    return Reply(
        Text(icon, f" Health: {head}"),
        lines=lines,
        footer=f"Probed concurrently in {elapsed:.2f} s, each service bounded by its own timeout; "
               "p95 over the recent probes (last 50 within 24 h).",
    )


def service_line(r: ProbeResult, p95: P95 | None) -> Text:
    parts: list = [f"{r.status}: {r.detail}"]
    if r.latency_ms is not None and not r.detail.startswith("timed out"):
        parts.append(f"{r.latency_ms:.0f} ms")
    if p95 is not None and p95.value_ms is not None:
        verdict = "within" if p95.within_slo else "over"
        mark = "" if p95.within_slo else Text(" ", Status("warning"))
        probes = f"{p95.samples} probe" + ("s" if p95.samples != 1 else "")
        parts.append(Text(f"p95 {p95.value_ms:.0f} ms {verdict} SLO {p95.slo_ms:.0f} ms ({probes})", mark))
    else:
        parts.append(f"p95 n/a (SLO {r.slo_ms:.0f} ms)")
    if r.version:
        parts.append(Text("version ", Code(r.version)))
    return Text(STATUS_ICON[r.status], " ", Em(r.name), f" ({r.env}) — ", join(" · ", parts))


def drift_lines(results: list[ProbeResult]) -> list[Text]:
    """The same service in several environments answering different versions."""
    by_name: dict[str, dict[str, str]] = {}
    for r in results:
        if r.version:
            by_name.setdefault(r.name, {})[r.env] = r.version
    lines = []
    for name, versions in by_name.items():
        if len(set(versions.values())) > 1:
            shown = join(" ≠ ", (Text(f"{env} ", Code(v)) for env, v in sorted(versions.items(), key=_prod_first)))
            lines.append(Text(Icon("twisted_rightwards_arrows"), " ", Em("drift"), f" — {name}: ", shown))
    return lines


def _prod_first(item: tuple[str, str]) -> tuple[int, str]:
    env = item[0]
    return ({"production": 0, "staging": 1}.get(env, 2), env)
