"""Finance lineage (`[[invariants]]`): checked on every applied Stripe event inside its
transaction; a violation is stored with the event, counted, shown by `lineage` with its trace
id, posted to the incident channel once per invariant and hour (held in panic mode); a silent
invariant is reported; bad configuration stops start-up naming the key. Through signed Stripe
webhooks in today's shapes and signed Slack requests, on SQLite and PostgreSQL."""

import re
from datetime import datetime, timezone

import pytest

from bot.billing.models import LineageCheck
from bot.errors import SettingsError
from bot.billing.lineage import violation
from bot.settings import Invariant, example_config_path, load_file_config
from bot.models import OutgoingMessage

from tests.support.harness import ADMIN, CHANNEL, VIEWER, Bot, flatten, make_settings
from tests.support.net import free_port

from . import shapes
from .conftest import StripeBot
from .shapes import NOW, event

INVARIANTS = """
[[invariants]]
name = "provider fee"
events = ["checkout.session.completed"]
field = "metadata.provider_fee_pct"
equals = 3

[[invariants]]
name = "ai markup"
events = ["checkout.session.completed"]
field = "metadata.ai_price"
ratio_of = "metadata.ai_cost"
factor = 4.0
tolerance = 0.01

[[invariants]]
name = "revenue amount"
events = ["invoice.paid"]
field = "data.object.amount_paid"
between = [1, 1000000]
"""


@pytest.fixture
def lbot(tmp_path, db_url, fake_slack):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml=INVARIANTS,
                             stripe_api_base=f"http://127.0.0.1:{free_port()}")
    bot = Bot(settings, fake_slack).start()
    yield StripeBot(bot, None)
    bot.stop()


def _checkout(bot, name, created, **metadata):
    evt = event("checkout.session.completed", shapes.checkout_session(
        f"cs_test_{name}", client_reference_id="acct_lineage", metadata={"credits": "5", **metadata}), created)
    response = bot.post_event(evt)
    assert response.status_code == 200, response.text
    return evt["id"]


def _violations_posted(bot):
    return [c for c in bot.slack.calls_of("chat.postMessage")
            if c.params.get("channel") == CHANNEL and "Finance lineage: invariant" in flatten(c.params)]


def _counted(bot, invariant, outcome):
    text = bot.http.get("/metrics").text
    found = re.search(r'^revops_lineage_checks_total\{invariant="%s",outcome="%s"\} ([0-9.]+)$'
                      % (re.escape(invariant), outcome), text, re.M)
    return float(found.group(1)) if found else 0.0


def _hour():
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


def test_a_violation_is_stored_counted_shown_and_posted_once_per_hour_and_held_in_panic(lbot):
    violated_before = _counted(lbot, "provider fee", "violated")
    passed_before = _counted(lbot, "ai markup", "passed")
    hour = _hour()

    good = _checkout(lbot, "good", NOW + 1, provider_fee_pct="3", ai_cost="2.50", ai_price="10.00")
    lbot.drain_sync()
    assert _violations_posted(lbot) == []
    assert {(c.invariant, c.ok) for c in lbot.rows(LineageCheck, LineageCheck.event_id == good)} == {
        ("provider fee", True), ("ai markup", True)}

    first = _checkout(lbot, "fee5", NOW + 2, provider_fee_pct="5", ai_cost="2.50", ai_price="10.00")
    lbot.drain_sync()
    [check] = lbot.rows(LineageCheck, LineageCheck.event_id == first, LineageCheck.ok.is_(False))
    assert check.invariant == "provider fee" and "metadata.provider_fee_pct is '5', expected 3" in check.detail
    assert _counted(lbot, "provider fee", "violated") == violated_before + 1
    assert _counted(lbot, "ai markup", "passed") == passed_before + 2
    [post] = _violations_posted(lbot)
    text = flatten(post.params)
    assert "invariant provider fee violated" in text and first in text and f"/revops trace {first}" in text

    # A second violation of the same invariant in the same hour is stored and counted, not posted.
    second = _checkout(lbot, "fee7", NOW + 3, provider_fee_pct="7", ai_cost="2.50", ai_price="10.00")
    lbot.drain_sync()
    assert lbot.rows(LineageCheck, LineageCheck.event_id == second, LineageCheck.ok.is_(False))
    assert _counted(lbot, "provider fee", "violated") == violated_before + 2
    assert len(_violations_posted(lbot)) == (1 if _hour() == hour else 2)  # (a new hour allows one more)

    # Panic mode: the first violation of another invariant is recorded as held, never sent.
    answer = lbot.slash("panic on", user=ADMIN).json()
    confirm = next(e for b in answer["blocks"] if b["type"] == "actions" for e in b["elements"]
                   if e["action_id"] == "revops:flags.panic_confirm")
    lbot.click_and_wait(confirm["action_id"], confirm["value"], user=ADMIN)
    posted = len(_violations_posted(lbot))
    markup = _checkout(lbot, "markup", NOW + 4, provider_fee_pct="3", ai_cost="2.50", ai_price="9.00")
    lbot.drain_sync()
    [bad] = lbot.rows(LineageCheck, LineageCheck.event_id == markup, LineageCheck.ok.is_(False))
    assert bad.invariant == "ai markup" and "expected 4 × metadata.ai_cost = 10" in bad.detail
    assert len(_violations_posted(lbot)) == posted
    held = lbot.rows(OutgoingMessage, OutgoingMessage.status == "held")
    assert any("invariant ai markup violated" in str(m.reply) for m in held), [m.reply for m in held]

    # `lineage`: per invariant checked / passed / violated, the last violation with its trace id,
    # and the invariant that saw no event.
    text = lbot.slash_text("lineage", user=VIEWER)
    assert "provider fee: 4 checked, 2 passed, 2 violated" in text
    assert f"trace {second}" in text and "metadata.provider_fee_pct is '7', expected 3" in text
    assert "ai markup: 4 checked, 3 passed, 1 violated" in text and f"trace {markup}" in text
    assert "revenue amount: 0 checked" in text
    assert "no events for invariant revenue amount in the last 24 hours (never checked)" in text
    assert "3 invariants, 2 violated, 1 silent" in text

    # The trace of a violating event shows its delivery and the lineage check.
    traced = lbot.slash_text(f"trace {second}", user=VIEWER)
    assert "invariant provider fee: metadata.provider_fee_pct is '7', expected 3" in traced and "violated" in traced


def test_a_duplicate_delivery_is_not_checked_twice_and_an_invoice_invariant_holds(lbot):
    evt = event("invoice.paid", shapes.invoice("in_lineage1", "cus_lineage1", None, status="paid", paid=4900), NOW + 1)
    for _ in range(2):
        assert lbot.post_event(evt).status_code == 200
    [check] = lbot.rows(LineageCheck, LineageCheck.event_id == evt["id"])
    assert check.invariant == "revenue amount" and check.ok
    text = lbot.slash_text("lineage --since 2h", user=VIEWER)
    assert "revenue amount: 1 checked, 1 passed, 0 violated" in text
    assert "no events for invariant provider fee in the last 2 hours (never checked)" in text


def test_without_invariants_lineage_says_how_to_add_them(tmp_path, db_url, fake_slack):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url)
    bot = Bot(settings, fake_slack).start()
    try:
        assert "no invariants configured" in bot.slash_text("lineage", user=VIEWER)
    finally:
        bot.stop()


@pytest.mark.parametrize("toml,expected", [
    ('[[invariants]]\nname = "x"\nevents = ["invoice.paid"]\nfield = "amount_paid"\n',
     "invariants.0: invariant 'x': expected exactly one rule of equals, between, present, ratio_of (found none)"),
    ('[[invariants]]\nname = "x"\nevents = ["invoice.paid"]\nfield = "amount_paid"\nequals = 1\npresent = true\n',
     "found equals, present"),
    ('[[invariants]]\nname = "x"\nevents = ["invoice.paid"]\nfield = "a"\nratio_of = "b"\n',
     "invariants.0: invariant 'x': ratio_of and factor go together"),
    ('[[invariants]]\nname = "x"\nevents = ["invoice.paid"]\nfield = "a"\nequal = 3\n',
     "invariants.0.equal: unknown key"),
    ('[[invariants]]\nname = "x"\nevents = []\nfield = "a"\nequals = 3\n', "invariants.0.events"),
    ('[[invariants]]\nname = "x"\nevents = ["e"]\nfield = "a..b"\nequals = 3\n', "invariants.0.field: expected a dotted path"),
    ('[[invariants]]\nname = "x"\nevents = ["e"]\nfield = "a"\nbetween = [5, 1]\n', "invariants.0.between: expected [low, high]"),
    ('[[invariants]]\nname = "x"\nevents = ["e"]\nfield = "a"\nequals = 3\n'
     '[[invariants]]\nname = "x"\nevents = ["e"]\nfield = "b"\nequals = 3\n', "invariants: invariant names must differ: x"),
])
def test_bad_invariant_config_names_the_key(tmp_path, toml, expected):
    with pytest.raises(SettingsError) as caught:
        make_settings(tmp_path, "sqlite+aiosqlite:///unused.db", "http://127.0.0.1:1/", extra_toml=toml)
    assert expected in str(caught.value) and str(caught.value).startswith("revops.toml: ")


def test_the_example_configuration_carries_the_b2b_runbook_invariants():
    from_example = {i.name: i for i in load_file_config(example_config_path()).invariants}
    assert from_example["provider fee"].field == "metadata.provider_fee_pct" and from_example["provider fee"].equals == 3
    assert from_example["ai markup"].field == "metadata.ai_markup_factor" and from_example["ai markup"].equals == 4.0


@pytest.mark.parametrize("rule,obj,holds", [
    ({"present": True}, {"metadata": {"revenue_event_id": "rev_1"}}, True),
    ({"present": True}, {"metadata": {"revenue_event_id": ""}}, False),
    ({"present": True}, {"metadata": {}}, False),
    ({"present": False}, {"metadata": {}}, True),
    ({"equals": True}, {"metadata": {"revenue_event_id": "true"}}, True),
    ({"equals": "rev_1"}, {"metadata": {"revenue_event_id": "rev_1"}}, True),
    ({"equals": "rev_1"}, {"metadata": {"revenue_event_id": "rev_2"}}, False),
    ({"between": [1, 5], "tolerance": 0.5}, {"metadata": {"revenue_event_id": "5.4"}}, True),
    ({"between": [1, 5]}, {"metadata": {"revenue_event_id": "5.4"}}, False),
    ({"between": [1, 5]}, {"metadata": {"revenue_event_id": "nan"}}, False),
    ({"ratio_of": "metadata.cost", "factor": 4}, {"metadata": {"revenue_event_id": 8, "cost": 2}}, True),
    ({"ratio_of": "metadata.cost", "factor": 4}, {"metadata": {"revenue_event_id": 8}}, False),
])
def test_each_rule(rule, obj, holds):
    invariant = Invariant(name="r", events=["x"], field="metadata.revenue_event_id", **rule)
    found = violation(invariant, {"type": "x", "data": {"object": obj}})
    assert (found is None) == holds, found
