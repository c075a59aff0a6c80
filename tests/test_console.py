"""`revops exec`, `revops click` and `revops console`: the same router without Slack."""

import os
import re
import subprocess
import sys

import pytest

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
    assert "Traceback" not in out.stdout + out.stderr
