"""`revops preflight`: the checklist from a deploy pipeline; one line per check,
exit 1 on any fail. It does not migrate: a database behind head is a fail."""

from __future__ import annotations

import asyncio
from typing import Callable

from sqlalchemy import text

from ..services import Services
from .preflight import run_preflight, summary
from .selfcheck import Check, secrets_presence

CONNECT_TIMEOUT = 15.0


async def preflight_checks(services: Services) -> list[Check]:
    settings, db = services.settings, services.db
    templates = services.template_samples(settings)
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                async with db.transaction() as session:
                    await session.execute(text("SELECT 1"))
        except Exception as exc:
            cause = exc.__cause__ or exc
            return await run_preflight(settings, None, templates=templates,
                                       database_error=f"unreachable ({type(cause).__name__})")
        async with db.transaction() as session:
            return await run_preflight(settings, session, templates=templates)
    finally:
        await db.dispose()


def plain_line(check: Check) -> str:
    line = f"{check.status.upper():4}  {check.name:<16} {check.detail}"
    if check.fix and check.status != "pass":
        line += f"  (fix: {check.fix})"
    return line


def preflight_main(services: Services, write: Callable[[str], None] = print) -> int:
    settings = services.settings
    checks = asyncio.run(preflight_checks(services))
    for check in checks:
        write(plain_line(check))
    write("secrets: " + ", ".join(f"{name} {state}" for name, state in secrets_presence(settings)))
    passed, warned, failed = summary(checks)
    verdict = "NOT READY" if failed else "ready"
    write(f"preflight ({settings.env.revops_env}): {verdict} — {passed} pass, {warned} warn, {failed} fail")
    return 1 if failed else 0
