"""POST /alerts: bearer token, validation, σ → severity, the card and its buttons, escalation."""

from __future__ import annotations

from datetime import timedelta

from bot.scheduler import run_due
from tests.incidents.conftest import incident, incident_runs, jobs, outbox
from tests.support.harness import ALERTS_TOKEN, RESPONDER, VIEWER, flatten

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
    initial = [m for m in await outbox(services, "C0INCIDENT") if "[P1] Incident #1" in m.reply["text"]]
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
    pages = [m for m in await outbox(services, "C0INCIDENT") if "Escalation" in m.reply["text"]]
    assert len(pages) == 1 and "U0EM" in str(pages[0].reply) and "U0ONCALL" not in str(pages[0].reply)
