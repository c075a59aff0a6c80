"""POST /alerts: bearer token, validation, σ → severity, the card and its buttons, escalation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.clock import FakeClock
from bot.scheduler import run_due
from tests.incidents.conftest import head, incident, incident_runs, jobs, outbox
from tests.support.harness import ALERTS_TOKEN, RESPONDER, VIEWER, Bot, flatten, make_settings

AUTH = {"Authorization": f"Bearer {ALERTS_TOKEN}"}
ALERT = {"stage": "checkout", "metric": "conversion_rate", "baseline_mean": 0.032, "baseline_std": 0.002,
         "current": 0.021, "traffic_per_hour": 1200, "aov": 80}


def test_alert_authorization_and_validation(ibot, fake_slack):
    assert ibot.http.post("/alerts", json=ALERT).status_code == 401
    assert ibot.http.post("/alerts", json=ALERT, headers={"Authorization": "Bearer wrong"}).status_code == 401
    bad_json = ibot.http.post("/alerts", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.text
    missing = ibot.http.post("/alerts", json={k: v for k, v in ALERT.items() if k != "current"}, headers=AUTH)
    assert missing.status_code == 422 and "current: Field required" in missing.text
    zero_std = ibot.http.post("/alerts", json={**ALERT, "baseline_std": 0}, headers=AUTH)
    assert zero_std.status_code == 422 and "baseline_std" in zero_std.text
    words = ibot.http.post("/alerts", json={**ALERT, "aov": "lots"}, headers=AUTH)
    assert words.status_code == 422 and "aov" in words.text
    assert ibot.http.post("/alerts", json=[ALERT], headers=AUTH).status_code == 422
    assert ALERTS_TOKEN not in bad_json.text + missing.text
    p3 = ibot.http.post("/alerts", json={**ALERT, "current": 0.029}, headers=AUTH)  # 1.5σ
    assert p3.status_code == 202 and p3.json()["severity"] == "P3" and p3.json()["posted"] is False
    p2 = ibot.http.post("/alerts", json={**ALERT, "current": 0.0265}, headers=AUTH)  # 2.75σ
    assert p2.json()["severity"] == "P2" and p2.json()["posted"] is True
    card = fake_slack.wait_for("chat.postMessage", 1)[0]
    assert card.params["channel"] == "C0ALERTS"
    ibot.drain_sync()
    assert len(fake_slack.calls_of("chat.postMessage")) == 1  # the P3 was recorded, not posted


async def test_alert_card_acknowledge_escalation_and_declare(ibot, services, clock, fake_slack):
    r = ibot.http.post("/alerts", json=ALERT, headers=AUTH)  # 5.5σ
    assert r.status_code == 202 and r.json()["severity"] == "P1"
    alert_id = r.json()["id"]
    card = flatten(fake_slack.wait_for("chat.postMessage", 1)[0].params)
    assert "[P1] Alert: conversion_rate on checkout is 5.5σ below baseline" in card
    assert "revops:incident.alert_ack" in card and "revops:incident.alert_declare" in card
    assert "Acknowledge within 15m; escalation has started" in card

    assert incident_runs(await run_due(services)) == [f"alert:{alert_id}:escalation"]  # L1 pages at once
    assert "U0ONCALL" in str((await outbox(services, "C0ALERTS"))[-1].reply)

    denied = ibot.click_and_wait("revops:incident.alert_ack", str(alert_id), user=VIEWER)
    assert "needs the responder role" in flatten(denied)
    acked = ibot.click_and_wait("revops:incident.alert_ack", str(alert_id), user=RESPONDER)
    assert acked.get("replace_original") is True
    assert "acknowledged by <@U0RESPONDER>" in flatten(acked)
    again = ibot.click_and_wait("revops:incident.alert_ack", str(alert_id), user=RESPONDER)
    assert "already acknowledged by <@U0RESPONDER>" in flatten(again)
    clock.advance(timedelta(minutes=20))
    await run_due(services)
    assert not any("U0EM" in str(m.reply) for m in await outbox(services, "C0ALERTS"))  # escalation stopped

    declared = ibot.click_and_wait("revops:incident.alert_declare", str(alert_id), user=RESPONDER)
    assert "incident #1 declared by <@U0RESPONDER>" in flatten(declared)
    row = await incident(services, 1)
    assert (row.channel, row.severity, row.stage, row.status, row.commander) == (
        "C0INCIDENT", "P1", "checkout", "acknowledged", RESPONDER)
    assert row.impact == {"baseline": 0.032, "current": 0.021, "traffic": 1200.0, "aov": 80.0}
    assert row.detected_at < row.declared_at  # the clocks started with the alert
    initial = [m for m in await outbox(services, "C0INCIDENT") if "[P1] Incident #1" in head(m)]
    assert len(initial) == 1 and "$1,056.00/hour" in str(initial[0].reply)
    twice = ibot.click_and_wait("revops:incident.alert_declare", str(alert_id), user=RESPONDER)
    assert "already declared from this alert" in flatten(twice)


async def test_declared_unacknowledged_alert_keeps_escalating_as_an_incident(ibot, services, clock):
    alert_id = ibot.http.post("/alerts", json=ALERT, headers=AUTH).json()["id"]
    await run_due(services)  # L1
    clock.advance(timedelta(minutes=5))
    answer = ibot.click_and_wait("revops:incident.alert_declare", str(alert_id), user=RESPONDER)
    assert "incident #1 declared" in flatten(answer), answer
    assert [j.kind for j in await jobs(services, 1) if j.status == "active" and j.kind == "escalation"]
    clock.advance(timedelta(minutes=10))  # 15m after the alert: L2, on the incident now
    await run_due(services)
    pages = [m for m in await outbox(services, "C0INCIDENT") if "Escalation" in head(m)]
    assert len(pages) == 1 and "U0EM" in str(pages[0].reply) and "U0ONCALL" not in str(pages[0].reply)


@pytest.mark.parametrize("field,value,problem", [
    ("current", True, "current: must be a JSON number (not a string or a boolean)"),
    ("current", "1e3", "current: must be a JSON number (not a string or a boolean)"),
    ("baseline_mean", False, "baseline_mean: must be a JSON number"),
    ("traffic_per_hour", "1200", "traffic_per_hour: must be a JSON number"),
    ("aov", 1e300, "aov: Input should be less than or equal to 1000000"),
    ("stage", 42, "stage: Input should be a valid string"),
    ("stage", "check\u0000out", "stage: must not contain control characters"),
    ("dedupe_key", "", "dedupe_key: String should have at least 1 character"),
])
def test_alert_numbers_are_typed_and_finite(ibot, fake_slack, field, value, problem):
    r = ibot.http.post("/alerts", json={**ALERT, field: value}, headers=AUTH)
    assert r.status_code == 422 and problem in " ".join(r.json()["problems"]), r.text
    ibot.drain_sync()
    assert fake_slack.calls_of("chat.postMessage") == []


@pytest.mark.parametrize("body", [
    {**ALERT, "baseline_std": 5e-324},  # σ = 0.011 / 5e-324 = inf
    {**ALERT, "baseline_mean": 1.7e308, "current": -1.7e308},  # the difference overflows
])
def test_an_infinite_deviation_is_refused_not_stored(ibot, fake_slack, body):
    r = ibot.http.post("/alerts", json=body, headers=AUTH)
    assert r.status_code == 422 and "deviation" in r.text and "not a finite number" in r.text
    ok = ibot.http.post("/alerts", json=ALERT, headers=AUTH)
    assert ok.status_code == 202 and ok.json()["id"] == 1  # nothing was stored before it


def test_numbers_past_what_json_can_hold_are_refused_in_words(ibot):
    huge = ('{"stage": "checkout", "metric": "m", "baseline_mean": 0.03, "baseline_std": 0.002, '
            '"current": 1' + "0" * 5000 + '}')
    r = ibot.http.post("/alerts", content=huge.encode(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and ("not valid JSON" in r.text or "current" in r.text)


async def test_a_monitor_retrying_gets_one_card_updated_with_the_count(ibot, services, fake_slack, clock):
    first = ibot.http.post("/alerts", json=ALERT, headers=AUTH).json()
    assert first["repeated"] is False and first["posted"] is True
    await fake_slack.wait("chat.postMessage", 1)
    clock.advance(timedelta(minutes=3))
    second = ibot.http.post("/alerts", json={**ALERT, "current": 0.020}, headers=AUTH).json()
    third = ibot.http.post("/alerts", json={**ALERT, "current": 0.019}, headers=AUTH).json()
    assert second["id"] == third["id"] == first["id"]
    assert (second["repeated"], second["repeats"], third["repeats"]) == (True, 1, 2)
    updates = await fake_slack.wait("chat.update", 2)
    card = flatten(updates[-1].params)
    assert "Seen 3 times; the last at" in card and "Current 0.019" in card
    assert "revops:incident.alert_ack" in card  # still open: the buttons stay
    await ibot.drain()
    assert len(fake_slack.calls_of("chat.postMessage")) == 1
    # Only one escalation clock for the three.
    escalations = [j.key for j in await jobs(services, None) if j.kind == "escalation"]
    assert escalations == [f"alert:{first['id']}:escalation"]

    # Past the window (10 minutes by default, from the last one seen) the same metric is a new alert.
    clock.advance(timedelta(minutes=11))
    fourth = ibot.http.post("/alerts", json=ALERT, headers=AUTH).json()
    assert fourth["repeated"] is False and fourth["id"] != first["id"]
    await fake_slack.wait("chat.postMessage", 2)


async def test_a_dedupe_key_matches_across_stage_and_window_and_after_acknowledgement(ibot, fake_slack, clock):
    first = ibot.http.post("/alerts", json={**ALERT, "dedupe_key": "mon-42"}, headers=AUTH).json()
    await fake_slack.wait("chat.postMessage", 1)
    acked = ibot.click_and_wait("revops:incident.alert_ack", str(first["id"]), user=RESPONDER)
    assert "acknowledged by <@U0RESPONDER>" in flatten(acked)
    clock.advance(timedelta(hours=2))  # far past the window: the key still names it
    again = ibot.http.post("/alerts", json={**ALERT, "metric": "checkout_errors", "dedupe_key": "mon-42"},
                           headers=AUTH).json()
    assert again["id"] == first["id"] and again["repeated"] is True and again["status"] == "acknowledged"
    [update] = await fake_slack.wait("chat.update", 1)
    card = flatten(update.params)
    assert "acknowledged by <@U0RESPONDER>" in card and "Seen 2 times" in card
    assert "revops:incident.alert_ack" not in card
    other = ibot.http.post("/alerts", json={**ALERT, "dedupe_key": "mon-43"}, headers=AUTH).json()
    assert other["id"] != first["id"] and other["repeated"] is False


def test_the_dedupe_window_is_a_setting(tmp_path, db_url, fake_slack):
    from tests.incidents.conftest import INCIDENT_TOML

    settings = make_settings(tmp_path, db_url, fake_slack.api_url,
                             extra_toml=INCIDENT_TOML + '\n[alerts]\ndedupe_window = "0s"\n')
    running = Bot(settings, fake_slack, clock=FakeClock()).start()
    try:
        ids = {running.http.post("/alerts", json=ALERT, headers=AUTH).json()["id"] for _ in range(3)}
        assert len(ids) == 3  # no window: every alert is its own card
        fake_slack.wait_for("chat.postMessage", 3)
    finally:
        running.stop()
