"""Values validated at the edge (issue 17, item 5): what a person types is checked before any
command or database sees it — ASCII digits only, bounded durations, no control characters, a
length limit — and revops.toml's durations lie within sane bounds. Through signed Slack requests
on both databases (NUL bytes are what broke PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.billing import ledger
from bot.errors import SettingsError
from bot.grammar import MAX_TEXT
from bot.grants.models import GrantRequest
from bot.incidents.models import Incident
from bot.models import AuditRecord
from bot.settings import load_settings
from tests.support.harness import ADMIN, APPROVER, RESPONDER, VIEWER, flatten, shown


async def _seed_account(bot):
    async with bot.db() as db, db.transaction() as s:
        await ledger.ensure_account(s, "acct_1", email="ada@example.com", at=bot.runtime.services.clock.now())


def _answer(bot, text, user=ADMIN) -> str:
    response = bot.slash(text, user=user)
    assert response.status_code == 200, response.text
    assert response.json().get("response_type") == "ephemeral", response.json()
    return shown(flatten(response.json()))


@pytest.mark.parametrize("text,expected", [
    ("grant acct_1 \u0663 arabic three", "<amount> must be a whole number, got \u0663"),
    ("grant acct_1 \uff15\uff10 fullwidth fifty", "<amount> must be a whole number"),
    ("credits adjust acct_1 +\u0663 sign and arabic digit", "<amount> must be a signed whole number"),
    ("audit --limit \u0665", "--limit must be a whole number"),
    ("grant acct_1 99999999999999999999 huge", "<amount> is too large"),
])
async def test_numbers_are_ascii_digits_only(bot, text, expected):
    await _seed_account(bot)
    answer = _answer(bot, text)
    assert expected in answer and "Usage: /revops" in answer
    async with bot.db() as db, db.transaction() as s:
        assert (await s.execute(select(GrantRequest))).scalars().all() == []


@pytest.mark.parametrize("text,user,expected", [
    ("audit --since 9999999999d", VIEWER, "--since must be a duration"),  # was a 500, before the role check
    ("audit --since 91d", APPROVER, "--since can be at most 90d, got 91d"),
    ("replay failed --since 99999999d", APPROVER, "--since must be a duration"),
    ("replay failed --since 2160h1s", APPROVER, "--since can be at most 90d"),
    ("audit --since 0s", APPROVER, "--since must be longer than 0s"),
])
def test_durations_have_a_maximum_and_overflow_gives_the_usage_line(bot, text, user, expected):
    answer = _answer(bot, text, user=user)
    assert expected in answer and "Usage: /revops" in answer
    assert "failed unexpectedly" not in answer


def test_ninety_days_is_still_taken(bot):
    assert "Audit log" in _answer(bot, "audit --since 90d", user=APPROVER)


@pytest.mark.parametrize("text,code,usage", [
    ("incident declare P1 checkout down\x00now", "U+0000", "/revops incident declare"),
    ("grant acct_1 5 refund\x00", "U+0000", "/revops grant"),
    ("customer ada\x00@example.com", "U+0000", "/revops customer"),
    ("incident note \x1b[31mred", "U+001B", "/revops incident note"),
    ("help\x7f", "U+007F", "/revops help"),
])
async def test_control_characters_are_refused_with_the_usage_line(bot, text, code, usage):
    await _seed_account(bot)
    answer = _answer(bot, text, user=ADMIN)
    assert f"control character ({code})" in answer and f"Usage: {usage}" in answer, answer
    async with bot.db() as db, db.transaction() as s:
        assert (await s.execute(select(Incident))).scalars().all() == []
        assert (await s.execute(select(GrantRequest))).scalars().all() == []


async def test_tabs_and_new_lines_are_taken(bot):
    answer = _answer(bot, "incident declare P2 checkout first line\nsecond\tline", user=RESPONDER)
    assert "declared" in answer, answer


async def test_user_text_has_a_limit_and_text_up_to_it_is_stored_whole(bot):
    await _seed_account(bot)
    too_long = "x" * (MAX_TEXT + 1)
    answer = _answer(bot, f"grant acct_1 5 {too_long}", user=RESPONDER)
    assert f"<reason> is too long: {MAX_TEXT + 1:,} characters, at most {MAX_TEXT:,}" in answer
    assert "Usage: /revops grant" in answer
    whole = "y" * MAX_TEXT
    assert "posted for approval" in _answer(bot, f"grant acct_1 5 {whole}", user=RESPONDER)
    async with bot.db() as db, db.transaction() as s:
        [request] = (await s.execute(select(GrantRequest))).scalars().all()
        assert request.reason == whole
        [audit] = (await s.execute(select(AuditRecord).where(AuditRecord.command == "grant"))).scalars().all()
        assert audit.args["reason"] == whole
    word = "acct_" + "9" * 200
    assert "<account> is too long: 205 characters, at most 100" in _answer(bot, f"credits {word}", user=VIEWER)


@pytest.mark.parametrize("text,expected", [
    ("impact baseline=3.2% current=2.1% traffic=1e308 aov=1e308", "traffic can be at most 1,000,000,000 visits an hour"),
    ("impact baseline=3.2% current=2.1% traffic=1200 aov=1e308", "aov can be at most 1,000,000"),
    ("impact baseline=3.2% current=2.1% traffic=1e400 aov=80", "traffic must be a finite number"),
    ("impact baseline=3.2% current=2.1% traffic=\u0661\u0662 aov=80", "traffic must be a number"),
])
def test_impact_refuses_figures_that_overflow(bot, text, expected):
    answer = _answer(bot, text, user=VIEWER)
    assert expected in answer and "inf" not in answer.replace("finite", ""), answer


def test_impact_at_the_bounds_is_finite(bot):
    answer = _answer(bot, "impact baseline=100% current=0% traffic=1000000000 aov=1000000", user=VIEWER)
    assert "1,000,000,000,000,000.00" in answer and "inf" not in answer


def _config(tmp_path, text):
    path = tmp_path / "revops.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("toml,message", [
    ('[credits]\napproval_ttl = "0s"\n', "credits.approval_ttl: must be at least 1s"),
    ('[credits]\napproval_ttl = "30d"\n', "credits.approval_ttl: must be at most 7d, got 30d"),
    ('[credits]\nmax_pending_per_requester = 0\n', "credits.max_pending_per_requester"),
    ('[severity.P1]\nack = "15m"\nresolve = "1h"\nrevenue_update = "0s"\n', "severity.P1.revenue_update: must be at least 1s"),
    ('[severity.P2]\nack = "1h"\nresolve = "4h"\nengineering_update = "3650d"\n',
     "severity.P2.engineering_update: must be at most 7d"),
    ('[severity.P1]\nack = "99999999999d"\nresolve = "1h"\n', "severity.P1.ack: a duration can be at most 3650d"),
    ('[health]\nprobe_every = "0s"\n', "health.probe_every: must be at least 1s"),
    ('[alerts]\ndedupe_window = "40d"\n', "alerts.dedupe_window: must be at most 30d"),
    ('[escalation]\nL1 = { after = "60d", notify = [] }\n', "escalation.L1.after: must be at most 30d"),
])
def test_revops_toml_durations_are_bounded(tmp_path, toml, message):
    with pytest.raises(SettingsError) as raised:
        load_settings(revops_config=_config(tmp_path, toml))
    assert message in str(raised.value)


def test_the_bounds_take_seconds_and_the_defaults(tmp_path):
    settings = load_settings(revops_config=_config(tmp_path, '[credits]\napproval_ttl = "2s"\n'))
    assert settings.cfg.credits.approval_ttl == timedelta(seconds=2)
    assert settings.cfg.credits.max_pending_per_requester == 2
    assert settings.cfg.alerts.dedupe_window == timedelta(minutes=10)
