"""`revops exec`, `revops click` and `revops console`: the same router without Slack."""

import os
import re
import subprocess
import sys

import pytest
from sqlalchemy import select

from bot.app import FAMILIES
from bot.billing import ledger
from bot.console import Console
from bot.grants.models import GrantRequest
from bot.incidents.models import TimelineEntry
from bot.models import AuditRecord
from bot.reply import Button, Reply
from bot.runtime import Runtime
from tests.support.harness import make_settings


@pytest.fixture
def cli_env(tmp_path, db_url):
    settings = make_settings(tmp_path, db_url, "http://127.0.0.1:9/api/")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STRIPE_", "REVOPS_", "DATABASE"))}
    env.update(DATABASE_URL=db_url, REVOPS_CONFIG=str(settings.config_path))
    return env


def revops(env, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=90)


def test_exec_runs_a_command_and_click_works_across_invocations(cli_env):
    out = revops(cli_env, "exec", "/revops panic on", "--as", "U0ADMIN", "--channel", "C0INCIDENT")
    assert out.returncode == 0, out.stderr
    assert "Turn panic mode on?" in out.stdout
    number = next(line.split("]")[0].strip(" [") for line in out.stdout.splitlines() if "Turn panic on" in line
                  and line.strip().startswith("["))
    denied = revops(cli_env, "click", number, "--as", "U0RESPONDER")
    assert "needs the admin role; you are responder" in denied.stdout
    clicked = revops(cli_env, "exec", f"click {number}", "--as", "U0ADMIN")
    assert "Panic mode is now on" in clicked.stdout
    assert "posted to #C0INCIDENT" in clicked.stdout
    status = revops(cli_env, "exec", "panic status", "--as", "U0VIEWER")
    assert "panic is on" in status.stdout


def test_exec_answers_bad_input_with_the_usage_line(cli_env):
    out = revops(cli_env, "exec", "dryrun sideways", "--as", "U0ADMIN")
    assert out.returncode == 0
    assert "expected one of on, off, status" in out.stdout and "Usage: /revops dryrun" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    out = revops(cli_env, "click", "999", "--as", "U0ADMIN")
    assert "No button [999]" in out.stdout


def test_console_reads_commands_from_standard_input(cli_env):
    script = "help\nas U0ADMIN\ndryrun on\ndryrun status --as U0VIEWER\nquit\n"
    out = revops(cli_env, "console", "--as", "U0VIEWER", stdin=script)
    assert out.returncode == 0, out.stderr
    assert "You are viewer" in out.stdout
    assert "Dry-run is now on" in out.stdout
    assert "Dry-run is on, panic is off" in out.stdout


def test_demo_runs_the_tour_on_a_fresh_sqlite_file(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STRIPE_", "REVOPS_", "DATABASE"))}
    out = subprocess.run([sys.executable, "-m", "bot", "console", "--demo", "--no-repl", "--db",
                          str(tmp_path / "demo.db")], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "revops demo" in out.stdout
    assert "Panic mode is now on" in out.stdout
    assert "audit chain verifies" in out.stdout
    # the billing operations of the tour: receivables, an invoice retry (answered in words without
    # a Stripe key), an export written to a file, a lineage violation
    assert "1. in_DEMOada0002 ada@example.com" in out.stdout
    assert "Stripe is not configured (STRIPE_SECRET_KEY is missing); nothing was changed" in out.stdout
    exported = re.search(r"file posted to #C0CONSOLE: (\S+\.csv)", out.stdout)
    assert exported and open(exported.group(1), encoding="utf-8").readline().startswith("id,name,email")
    assert "1 violated" in out.stdout and "trace evt_DEMOfeewrong" in out.stdout
    # a form's fields as prompts: `grant` without arguments (a modal in Slack)
    assert "/revops grant asks for these" in out.stdout
    assert "Account [an account id, a cus_… id or an email]: " in out.stdout
    assert "Or type it in full: /revops grant <account> <amount> <reason...>" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr


class Prompts:
    """Stands in for the person at the interactive console: answers each prompt in turn."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.asked.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


async def console_runtime(tmp_path, db_url):
    settings = make_settings(tmp_path, db_url, "http://127.0.0.1:9/api/", slack_bot_token=None,
                             slack_signing_secret=None, stripe_secret_key=None)
    runtime = Runtime(settings, FAMILIES)
    await runtime.services.db.upgrade()
    async with runtime.services.db.transaction() as s:
        await ledger.ensure_account(s, "acct_1", email="ada@example.com", at=runtime.services.clock.now())
    return runtime


async def test_the_interactive_console_prompts_for_a_forms_fields_then_runs_it(tmp_path, db_url):
    runtime = await console_runtime(tmp_path, db_url)
    out: list[str] = []
    # Account, Amount (refused by the grammar), Reason over two lines; then Amount again.
    prompts = Prompts(["acct_1", "lots", "goodwill for", "the outage", "", "12"])
    console = Console(runtime, user="U0RESPONDER", channel="C0INCIDENT", write=out.append, ask=prompts)
    try:
        await console.run_line("/revops grant")
        text = "\n".join(out)
        assert [p.split(" [")[0].split(":")[0] for p in prompts.asked[:3]] == ["Account", "Amount (credits)",
                                                                              "Reason"]
        assert "✗ Amount (credits): Amount (credits) must be a whole number, got lots" in text
        assert prompts.asked[-1].startswith("Amount (credits)")  # only the refused field is asked again
        assert "posted for approval" in text and "→ posted to #C0INCIDENT" in text
        async with runtime.services.db.transaction() as s:
            request = (await s.execute(select(GrantRequest))).scalars().one()
            audit = (await s.execute(select(AuditRecord).where(AuditRecord.command == "grant"))).scalars().one()
        assert (request.amount, request.reason, request.requester) == (12, "goodwill for\nthe outage", "U0RESPONDER")
        assert audit.surface == "console" and audit.outcome == "ok"
    finally:
        await runtime.services.db.dispose()


async def test_a_form_button_in_the_console_asks_the_form_prefilled(tmp_path, db_url):
    runtime = await console_runtime(tmp_path, db_url)
    out: list[str] = []
    console = Console(runtime, user="U0RESPONDER", channel="C0INCIDENT", write=out.append,
                      ask=Prompts(["", "rolled back the deploy", ""]))
    try:
        await console.run_line("/revops incident declare P2 checkout card payments fail")
        await console.show(Reply("No update for a while", buttons=[Button("Post update", "form:incident update", "#1")]))
        await console.click(["Post", "update"], "U0RESPONDER")
        assert "Update posted on #1." in "\n".join(out)
        async with runtime.services.db.transaction() as s:
            entries = (await s.execute(select(TimelineEntry).where(TimelineEntry.kind == "update"))).scalars().all()
        assert [e.text for e in entries] == ["Update: rolled back the deploy"]
        console.ask = None  # `revops exec`: the fields are printed, nothing runs
        await console.runtime.deliverer.deliver_due()
        mark = len(out)
        await console.run_line("/revops incident update")
        printed = "\n".join(out[mark:])
        assert "/revops incident update asks for these" in printed
        assert "Incident [#ID; empty: this channel's open incident] (optional): " in printed
    finally:
        await runtime.services.db.dispose()
