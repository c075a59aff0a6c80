"""The incident pages' pictures (issue 19 item 7): MTTA / MTTR per severity over the last 90
days from the incidents' own timestamps, the incident timeline's layout against its targets,
and the inline SVG escaping what people typed."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from bot.app import build_services
from bot.clock import FakeClock
from bot.incidents.charts import (BAR_LEFT, BAR_RIGHT, LEFT, OVER, RIGHT, ResponseTimes, response_chart,
                                  response_times, timeline_chart)
from bot.incidents.models import Incident, TimelineEntry
from tests.support.harness import ADMIN_KEY, RESPONDER, make_settings

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
M, H, D = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def incident(n: int, severity: str, detected: datetime, *, ack: timedelta | None = None,
             mitigated: timedelta | None = None, resolved: timedelta | None = None,
             declared: timedelta = timedelta(0)) -> Incident:
    done = resolved is not None
    status = ("resolved" if done else "mitigated" if mitigated is not None else
              "acknowledged" if ack is not None else "declared")
    return Incident(
        id=n, channel=f"C{n}", open_channel=None if done else f"C{n}", severity=severity, stage="checkout",
        summary=f"incident {n}", status=status, declared_by=RESPONDER, commander=RESPONDER if ack else None,
        comms=None, scribe=None, detected_at=detected, declared_at=detected + declared,
        acknowledged_at=detected + ack if ack is not None else None,
        mitigated_at=detected + mitigated if mitigated is not None else None,
        resolved_at=detected + resolved if done else None, resolved_by=RESPONDER if done else None,
        root_cause="x" if done else None, impact=None, last_human_update_at=None, escalation_level=0,
        alert_id=None)


@pytest.fixture
async def services(tmp_path, db_url, fake_slack):
    svc = build_services(make_settings(tmp_path, db_url, fake_slack.api_url), FakeClock(NOW))
    await svc.db.upgrade()
    yield svc
    await svc.db.dispose()


async def test_mtta_and_mttr_per_severity_over_the_last_90_days(services):
    async with services.db.transaction() as s:
        s.add_all([
            incident(1, "P1", NOW - 10 * D, ack=4 * M, mitigated=20 * M, resolved=40 * M),
            incident(2, "P1", NOW - 20 * D, ack=10 * M, resolved=80 * M),
            incident(3, "P1", NOW - 91 * D, ack=3 * H, resolved=30 * H),  # older than 90 days: left out
            incident(4, "P2", NOW - H, ack=30 * M),  # open, acknowledged: in MTTA, not in MTTR
            incident(5, "P2", NOW - 5 * M),  # open, not acknowledged
        ])
    async with services.db.transaction() as s:
        times = {t.severity: t for t in await response_times(s, services.settings, NOW)}

    assert list(times) == ["P1", "P2", "P3"]
    p1, p2, p3 = times["P1"], times["P2"], times["P3"]
    assert (p1.incidents, p1.acknowledged, p1.resolved, p1.open) == (2, 2, 2, 0)
    assert p1.mtta == 7 * M and p1.mttr == 60 * M
    assert (p1.ack_target, p1.resolve_target) == (15 * M, H)
    assert (p2.incidents, p2.acknowledged, p2.resolved, p2.open) == (2, 1, 0, 2)
    assert p2.mtta == 30 * M and p2.mttr is None
    assert (p3.incidents, p3.mtta, p3.mttr) == (0, None, None)

    async with services.db.transaction() as s:  # a shorter window leaves out incident 2 as well
        short = {t.severity: t for t in await response_times(s, services.settings, NOW, window=15 * D)}
    assert short["P1"].incidents == 1 and short["P1"].mttr == 40 * M

    chart = response_chart(list(times.values()))
    bars = {b["id"]: b for panel in chart["panels"] for b in panel["bars"]}
    assert [p["key"] for p in chart["panels"]] == ["mtta", "mttr"]
    target_x = chart["target_x"] - BAR_LEFT
    assert bars["bar-mtta-P1"]["w"] == round(7 / 15 * target_x, 1) and not bars["bar-mtta-P1"]["late"]
    assert bars["bar-mttr-P1"]["w"] == round(target_x, 1)  # exactly on target: not late
    assert bars["bar-mttr-P1"]["value"] == "1h over 2 incidents, target 1h"
    assert bars["bar-mtta-P2"]["value"] == "30m over 1 incident, target 1h"
    assert bars["bar-mttr-P2"]["empty"] and bars["bar-mttr-P2"]["value"] == "none resolved, 2 open"
    assert bars["bar-mtta-P3"]["empty"] and bars["bar-mtta-P3"]["value"] == "no incidents"
    assert (chart["incidents"], chart["open"], chart["days"]) == (4, 2, 90)


def test_a_bar_past_its_target_is_late_and_cut_at_the_edge():
    slow = ResponseTimes("P1", 1, 1, 1, 0, 45 * M, 5 * H, 15 * M, H)
    bars = {b["id"]: b for panel in response_chart([slow])["panels"] for b in panel["bars"]}
    assert bars["bar-mtta-P1"]["late"] and bars["bar-mtta-P1"]["cut"]
    assert bars["bar-mtta-P1"]["w"] == BAR_RIGHT - BAR_LEFT  # 3x the target, cut at OVER
    assert OVER < 3
    assert all(b["value_x"] < 620 for b in bars.values())


def test_the_timeline_of_an_open_incident_runs_up_to_now(tmp_path, fake_slack):
    settings = make_settings(tmp_path, "sqlite+aiosqlite:///unused.db", fake_slack.api_url)
    now = NOW + 50 * M
    open_one = incident(1, "P1", NOW, ack=20 * M, declared=2 * M)
    entries = [TimelineEntry(incident_id=1, at=NOW + 30 * M, kind="update", actor=RESPONDER, text="Update: x",
                             data={"text": "x" * 500}),
               TimelineEntry(incident_id=1, at=NOW + 35 * M, kind="note", actor=RESPONDER, text="Note: y",
                             data={"text": "y"}),
               TimelineEntry(incident_id=1, at=NOW - 5 * M, kind="pin", actor="U0DEV", text="Pinned message: z",
                             data={"text": "z"})]
    chart = timeline_chart(open_one, entries, settings, now)

    assert chart["open"] and LEFT < chart["now_x"] < RIGHT
    assert [m["key"] for m in chart["marks"]] == ["detect", "declare", "ack"]  # detected 2m before declared
    assert [p["status"] for p in chart["phases"]] == ["detected", "declared", "acknowledged"]
    detected, declared, acked = chart["phases"]
    assert detected["x"] == LEFT and detected["x"] + detected["w"] == declared["x"] and acked["x"] + acked["w"] == pytest.approx(chart["now_x"], abs=0.2)
    ack = next(m for m in chart["marks"] if m["key"] == "ack")
    assert ack["late"] and ack["label"] == "acknowledged 12:20"  # 20m against a 15m target
    assert {t["key"]: t["met"] for t in chart["targets"]} == {"ack": False, "resolve": True}
    assert chart["targets_off"] == []
    update, pin = chart["updates"]  # notes are not ticks
    assert update["kind"] == "update" and len(update["text"]) == 200
    assert pin["kind"] == "pin" and pin["text"] == "z" and pin["x"] == LEFT  # posted before detection
    assert all(LEFT <= t["x"] <= RIGHT for t in chart["ticks"]) and chart["ticks"][0]["label"] == "12:00 UTC"
    rows = {m["key"]: m["label_y"] for m in chart["marks"]}
    assert rows["detect"] != rows["declare"]  # close marks: labels on different rows

    # resolved in 30m at P3 (24h to resolve): the target is named, not drawn, so the incident stays readable
    quick = incident(2, "P3", NOW, ack=5 * M, mitigated=10 * M, resolved=30 * M)
    chart = timeline_chart(quick, [], settings, NOW + 5 * H)
    assert not chart["open"] and [t["key"] for t in chart["targets"]] == []  # 4h ack: past 3x of 30m
    assert chart["targets_off"] == ["acknowledge target 4h is past the right edge",
                                    "resolve target 1d is past the right edge"]
    resolve = next(m for m in chart["marks"] if m["key"] == "resolve")
    assert resolve["x"] < RIGHT and not resolve["late"]


def first_svg(html: str, svg_id: str) -> str:
    match = re.search(rf'<svg id="{svg_id}".*?</svg>', html, re.S)
    assert match, html[:3000]
    return match.group(0)


def test_the_svg_escapes_what_people_typed(ibot, clock):
    ibot.slash_text('incident declare P1 checkout <script>alert(1)</script> & <tspan>', user=RESPONDER)
    clock.advance(timedelta(minutes=3))
    assert "posted" in ibot.slash_text("incident update <svg onload=alert(1)> ]]> <!-- x> done", user=RESPONDER)
    page = ibot.http.get("/incidents/1", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert page.status_code == 200
    svg = first_svg(page.text, "incident-timeline")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;tspan&gt;" in svg
    assert "&lt;svg onload=alert(1)&gt; ]]&gt; &lt;!-- x&gt; done" in svg
    assert "<script" not in page.text and "<tspan" not in svg and "onload=" not in svg.replace("&lt;svg onload", "")
    assert svg.count("<svg") == 1 and 'id="mark-now"' in svg
    # nothing to run and nothing loaded from elsewhere: the pages' strict policy holds as it was
    policy = page.headers["content-security-policy"]
    assert policy.startswith("default-src 'none';") and "script-src" not in policy
    assert "href=" not in svg and "url(" not in svg and "<script" not in svg and "<foreignObject" not in svg

    listing = ibot.http.get("/incidents", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    chart = first_svg(listing.text, "response-times")
    assert 'id="bar-mtta-P1"' not in chart and "none acknowledged, 1 open" in chart
    ibot.slash_text("incident ack", user=RESPONDER)
    chart = first_svg(ibot.http.get("/incidents", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text,
                      "response-times")
    assert 'id="bar-mtta-P1"' in chart and "3m over 1 incident, target 15m" in chart
