"""The audit log: append-only, hash-chained, checkable from Slack and the CLI."""

import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from tests.support.harness import ADMIN, APPROVER, RESPONDER, VIEWER, flatten


def run_cli(bot, *args):
    env = {**os.environ, "DATABASE_URL": bot.settings.env.database_url,
           "REVOPS_CONFIG": str(bot.settings.config_path)}
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, env=env,
                          timeout=60)


async def tamper(bot, sql: str):
    """What an attacker with database access would do: drop the guard, change the log."""
    async with bot.db() as db:
        async with db.engine.begin() as conn:
            if db.dialect == "postgresql":
                await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change"))
            else:
                await conn.execute(text("DROP TRIGGER audit_log_no_update"))
                await conn.execute(text("DROP TRIGGER audit_log_no_delete"))
            await conn.execute(text(sql))


def make_some_history(bot):
    bot.slash_text("dryrun on", user=ADMIN)
    bot.slash_text("dryrun on", user=VIEWER)
    bot.slash_text("dryrun off", user=ADMIN)


def test_audit_shows_records_and_that_the_chain_verifies(bot):
    make_some_history(bot)
    answer = bot.slash_text("audit", user=APPROVER)
    assert "audit chain verifies (3 records)" in answer
    assert "<@U0VIEWER> dryrun choice=on → denied" in answer
    assert answer.count("dryrun") >= 3


def test_audit_filters_by_user_and_subject(bot):
    make_some_history(bot)
    only_viewer = bot.slash_text("audit <@U0VIEWER|viewer>", user=APPROVER)
    assert "U0VIEWER" in only_viewer and "<@U0ADMIN> dryrun" not in only_viewer
    by_subject = bot.slash_text("audit dry_run --since 1h", user=APPROVER)
    assert "dry_run -&gt; on" in by_subject and "denied" not in by_subject
    nothing = bot.slash_text("audit acct_nobody", user=APPROVER)
    assert "No records match" in nothing


async def test_the_database_refuses_to_change_audit_records(bot):
    make_some_history(bot)
    async with bot.db() as db:
        with pytest.raises(Exception, match="append-only"):
            async with db.engine.begin() as conn:
                await conn.execute(text("UPDATE audit_log SET outcome = 'ok' WHERE id = 2"))
        with pytest.raises(Exception, match="append-only"):
            async with db.engine.begin() as conn:
                await conn.execute(text("DELETE FROM audit_log WHERE id = 1"))


async def test_an_altered_record_is_detected(bot):
    make_some_history(bot)
    ok = run_cli(bot, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "verifies (3 records)" in ok.stdout
    await tamper(bot, "UPDATE audit_log SET outcome = 'ok' WHERE id = 2")
    broken = run_cli(bot, "audit", "verify")
    assert broken.returncode == 1
    assert "record #2 was altered" in broken.stdout
    assert "BROKEN: record #2 was altered" in bot.slash_text("audit", user=APPROVER)


@pytest.mark.parametrize("which,problem", [(2, "record #2 is missing"), (3, "the log ends at #2")])
async def test_a_removed_record_is_detected(bot, which, problem):
    make_some_history(bot)
    await tamper(bot, f"DELETE FROM audit_log WHERE id = {which}")
    broken = run_cli(bot, "audit", "verify")
    assert broken.returncode == 1
    assert problem in broken.stdout


def test_audit_argument_errors_get_the_usage_line(bot):
    answer = bot.slash_text("audit --limit lots", user=APPROVER)
    assert "--limit must be a whole number" in answer and "Usage: /revops audit" in answer
    answer = bot.slash_text("audit a b", user=APPROVER)
    assert "unexpected argument b" in answer
