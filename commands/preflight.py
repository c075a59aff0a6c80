"""`preflight`: the go-live checklist (SPEC §4) — required settings, Stripe key mode
against REVOPS_ENV, webhook secret, the pinned Stripe API version against the SDK's and the
webhook endpoints', database kind, migrations, dry-run and panic,
roles, templates, Slack scopes. Pass / warn / fail with a fix each; secrets are
only "set" or "missing". The same checks back `revops preflight` (CLI)."""

from __future__ import annotations

from bot.context import Context
from bot.deliveries import resume as resume_sending
from bot.health.preflight import run_preflight, summary
from bot.health.selfcheck import Check, secrets_presence
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Em, Status, Text

commands = CommandSet("preflight")

STATUSES = {"pass": Status("ok"), "warn": Status("warning"), "fail": Status("failed")}


def check_line(check: Check) -> Text:
    fix = f" · fix: {check.fix}" if check.fix and check.status != "pass" else ""
    return Text(STATUSES[check.status], " ", Em(check.name), f" — {check.detail}", fix)


@commands.command("preflight", summary="go-live checklist: settings, key mode, webhook secret, database, "
                  "migrations, flags, roles, templates, Slack scopes — pass / warn / fail with a fix each",
                  role=Role.responder, slow=True)
async def preflight(ctx: Context, args: dict) -> Reply:
    settings = ctx.settings

    async def token_works() -> None:  # auth.test passed: sending to Slack, if paused, resumes
        async with ctx.writing() as session:
            await resume_sending(session, ctx.now)

    checks = await run_preflight(settings, ctx.session, templates=ctx.services.template_samples(settings),
                                 slack_auth_test=ctx.services.extras.get("slack_auth_test"),
                                 stripe=ctx.services.stripe, now=ctx.now, token_works=token_works)
    passed, warned, failed = summary(checks)
    icon = Status("failed" if failed else "warning" if warned else "ok")
    verdict = "not ready to go live" if failed else "ready to go live"
    return Reply(
        Text(icon, f" Preflight ({settings.env.revops_env}): {verdict} — {passed} pass, {warned} warn, {failed} fail"),
        lines=[check_line(c) for c in checks],
        fields=[(name, state) for name, state in secrets_presence(settings)],
        footer=Text(Code("revops preflight"), " runs the same checks from a deploy pipeline (exit 1 on any fail)."),
    )
