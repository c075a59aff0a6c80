"""Templates (operator override, start-up check) and the impact arithmetic."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from bot.app import runtime
from bot.errors import SettingsError, UsageError
from bot.incidents.impact import Impact, parse_figures, parse_rate, parse_traffic
from bot.incidents.views import sample_contexts
from bot.slack.blocks import mrkdwn
from bot.templating import render, render_check, render_text
from tests.support.harness import RESPONDER, VIEWER, make_settings


def _settings(tmp_path, templates_dir: str | None = None):
    extra = f'templates_dir = "{templates_dir}"\n' if templates_dir else ""
    config = tmp_path / f"ops-{abs(hash(templates_dir))}.toml"
    config.write_text(extra)
    return make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/t.db", "http://127.0.0.1:9/api/",
                         extra_toml="", revops_config=str(config))


def test_every_packaged_template_renders(tmp_path):
    settings = _settings(tmp_path)
    assert render_check(settings, sample_contexts(settings)) == []


def test_an_operator_copy_rewords_a_template(tmp_path):
    ops = tmp_path / "ops-templates"
    ops.mkdir()
    (ops / "update_reminder.md").write_text("Hey {{ incident.commander | mention }}, {{ since }} without news!\n")
    settings = _settings(tmp_path, str(ops))
    context = sample_contexts(settings)
    assert render_check(settings, context) == []
    # the plain reading; the mention is a typed piece (rendered <@U0RESPONDER> in Slack)
    assert render(settings, "update_reminder.md", **context["update_reminder.md"]) == \
        "Hey @U0RESPONDER, 35m without news!"
    reworded = render_text(settings, "update_reminder.md", **context["update_reminder.md"])
    assert mrkdwn(reworded) == "Hey <@U0RESPONDER>, 35m without news!"
    assert "Revenue-team update 2" in render(settings, "revenue_update.md", **context["revenue_update.md"])


def test_a_broken_template_stops_start_up_naming_it(tmp_path):
    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "report.md").write_text("Report {{ incident.no_such_field }}\n")
    settings = _settings(tmp_path, str(ops))
    problems = render_check(settings, sample_contexts(settings))
    assert len(problems) == 1 and problems[0].startswith("template report.md")
    with pytest.raises(SettingsError, match="template report.md"):
        asyncio.run(runtime(settings).start())

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVOPS_", "DATABASE_"))}
    env.update(REVOPS_CONFIG=str(settings.config_path), DATABASE_URL=f"sqlite:///{tmp_path}/cli.db")
    result = subprocess.run([sys.executable, "-m", "bot", "worker", "--once"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "template report.md" in result.stderr
    assert not (tmp_path / "cli.db").exists()  # nothing started

    (ops / "report.md").write_text("Report {% if %}\n")
    assert render_check(settings, sample_contexts(settings))[0].startswith("template report.md line 1")
    missing = _settings(tmp_path, str(tmp_path / "nowhere"))
    assert "is not a folder" in render_check(missing, sample_contexts(missing))[0]


@pytest.mark.parametrize("raw, value", [("3.2%", 0.032), ("0.032", 0.032), ("0%", 0.0), ("100%", 1.0)])
def test_rates(raw, value):
    assert parse_rate(raw) == pytest.approx(value)


@pytest.mark.parametrize("raw", ["3.2", "-1%", "abc", "nan", "1e400", "120%", ""])
def test_nonsense_rates_are_refused(raw):
    with pytest.raises(ValueError):
        parse_rate(raw)


def test_traffic_and_the_formula():
    assert parse_traffic("1200") == parse_traffic("1200/h") == parse_traffic("1,200/hr") == parse_traffic("28800/d")
    with pytest.raises(ValueError):
        parse_traffic("-5/h")
    figures = parse_figures({"baseline": "3.2%", "current": "0.021", "traffic": "1200/h", "aov": "$80"})
    impact = Impact.from_figures(figures)
    assert impact.hourly == pytest.approx(1056.0) and impact.daily == pytest.approx(25344.0)
    assert Impact(0.02, 0.03, 100, 10).hourly == 0  # no loss when current is above baseline
    with pytest.raises(UsageError, match="aov"):
        parse_figures({"aov": "-3"})


def test_impact_command(bot):
    text = bot.slash_text("impact baseline=3.2% current=2.1% traffic=1200/h aov=80", user=VIEWER)
    assert "Revenue impact: $1,056.00/hour, $25,344.00/day" in text
    missing = bot.slash_text("impact baseline=3.2% current=2.1%", user=VIEWER)
    assert "missing traffic=, aov=" in missing and "Usage: /revops impact" in missing
    nonsense = bot.slash_text("impact baseline=32 current=2.1% traffic=1200 aov=80", user=VIEWER)
    assert "baseline 32 is above 1: write a rate as 3.2% or 0.032" in nonsense
    assert "traffic must be a number" in bot.slash_text("impact baseline=3% current=2% traffic=lots aov=80",
                                                         user=VIEWER)
    bot.slash_text("incident declare P2 checkout slow baseline=3% current=2% traffic=1000 aov=50", user=RESPONDER)
    assert "Impact of incident #1: $500.00/hour, $12,000.00/day" in bot.slash_text("impact", user=VIEWER)
