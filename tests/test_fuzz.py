"""hypothesis over the command parser and every sub-command's arguments: never an
exception, always an answer, and the usage line whenever the input was wrong."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bot.app import build_services
from bot.router import Router
from tests.support.harness import make_settings

EXAMPLES = int(os.environ.get("REVOPS_FUZZ_EXAMPLES", "300"))
OK_OUTCOMES = {"ok", "usage", "denied", "failed", "dry_run", "refused"}


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = make_settings(tmp, f"sqlite+aiosqlite:///{tmp}/fuzz.db", "http://127.0.0.1:9/api/",
                        stripe_api_base="http://127.0.0.1:9", slack_bot_token=None)
    loop = asyncio.new_event_loop()
    services = build_services(cfg)
    loop.run_until_complete(services.db.upgrade())
    router = Router(services)
    paths = sorted({" ".join(c.grammar.path) for c in services.registry.commands})
    yield loop, router, paths
    loop.run_until_complete(services.db.dispose())
    loop.close()


WORDS = st.one_of(
    st.sampled_from(["on", "off", "status", "all", "#1", "#0", "P1", "P4", "acct_1", "cus_X", "evt_1", "sub_1",
                     "a@b.co", "--since", "--days", "--limit", "24h", "-5", "+5", "0", "99999999999999999999",
                     "3.2%", "1200/h", "baseline=", "current=0.02", "traffic=x", "aov=80", "'", '"', "“", "—",
                     "<@U0ADMIN>", "@U0X", "failed", "declare", "ack", "resolve", "adjust", "\\", "--", "=",
                     "", " ", "\n"]),
    st.text(min_size=0, max_size=12),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
@given(data=st.data())
def test_any_input_gets_an_answer_never_an_exception(fuzz_env, data):
    loop, router, paths = fuzz_env
    head = data.draw(st.one_of(st.sampled_from(paths), st.text(max_size=10)))
    tail = data.draw(st.lists(WORDS, max_size=6))
    text = " ".join([head, *tail])
    user = data.draw(st.sampled_from(["U0ADMIN", "U0RESPONDER", "U0VIEWER"]))
    outcome = loop.run_until_complete(
        asyncio.wait_for(router.handle_text(text, actor=user, channel="C0FUZZ", surface="console"), 30))
    assert outcome.outcome in OK_OUTCOMES, (text, outcome.outcome, outcome.reply.plain())
    assert outcome.reply.text.strip()
    if outcome.outcome == "usage":
        assert any(line.startswith("Usage:") for line in outcome.reply.lines), (text, outcome.reply.plain())
    assert "Traceback" not in outcome.reply.plain()


@pytest.mark.parametrize("text", ["grant approve 99999999999999999999", "grant reject #99999999999999999999",
                                  "audit --limit 99999999999999999999", "grant approve ٣"])
def test_numbers_too_large_for_the_database_get_the_usage_line(fuzz_env, text):
    # found by the fuzzer: a 20-digit request id reached SQLite and overflowed its INTEGER
    loop, router, _ = fuzz_env
    outcome = loop.run_until_complete(router.handle_text(text, actor="U0ADMIN", channel="C0FUZZ", surface="console"))
    assert outcome.outcome == "usage", (text, outcome.reply.plain())
    assert any(line.startswith("Usage:") for line in outcome.reply.lines)
