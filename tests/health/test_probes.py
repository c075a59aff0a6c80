"""Probes against real HTTP servers on loopback: statuses, codes, versions, and the
round bounded by the slowest timeout rather than the sum."""

from __future__ import annotations

import time
from datetime import timedelta

from bot.health.history import percentile
from bot.health.probes import extract_version, probe_services
from bot.settings import ServiceCheck


def svc(name: str, url: str, timeout: float = 2.0, slo_ms: float = 1000, env: str = "production") -> ServiceCheck:
    return ServiceCheck(name=name, env=env, url=url, timeout=timedelta(seconds=timeout),
                        p95_slo=timedelta(milliseconds=slo_ms))


async def test_each_kind_of_service_gets_its_status(monitored):
    u = monitored.url
    checks = [
        svc("fast", f"{u}/fast"),
        svc("hang", f"{u}/hang", timeout=0.4),
        svc("error", f"{u}/error"),
        svc("closed", monitored.closed, timeout=1),
        svc("sluggish", f"{u}/sluggish", slo_ms=100),
        svc("missing", f"{u}/missing"),
        svc("moved", f"{u}/moved"),
        svc("nested", f"{u}/nested"),
        svc("nodns", "http://revops-health-test.invalid/health", timeout=1),
    ]
    started = time.perf_counter()
    results = {r.name: r for r in await probe_services(checks)}
    wall = time.perf_counter() - started

    fast = results["fast"]
    assert (fast.status, fast.code, fast.version) == ("ok", 200, "2.0.0")
    assert fast.latency_ms is not None and fast.latency_ms < 1000

    hang = results["hang"]
    assert (hang.status, hang.code, hang.detail) == ("down", None, "timed out after 400ms")
    assert 350 <= hang.latency_ms < 1000

    assert (results["error"].status, results["error"].code, results["error"].detail) == ("down", 500, "HTTP 500")
    assert (results["closed"].status, results["closed"].detail) == ("down", "connection refused")
    assert results["closed"].latency_ms is None
    assert results["sluggish"].status == "degraded" and "slower than its SLO" in results["sluggish"].detail
    assert (results["missing"].status, results["missing"].code) == ("degraded", 404)
    assert (results["moved"].status, results["moved"].code) == ("degraded", 302)
    assert results["nested"].version == "abc1234"
    assert results["nodns"].status == "down"
    assert results["nodns"].detail in ("DNS failure", "timed out after 1s")
    # Everything at once: bounded by the slowest timeout (1 s), not the sum (~9 s).
    assert wall < 1.8, wall


async def test_a_round_takes_the_slowest_timeout_not_the_sum(monitored):
    checks = [svc(f"hang{i}", f"{monitored.url}/hang", timeout=0.3) for i in range(12)]
    started = time.perf_counter()
    results = await probe_services(checks)
    wall = time.perf_counter() - started
    assert all(r.status == "down" for r in results)
    assert wall < 0.9, wall  # sequentially: 12 × 0.3 = 3.6 s


def test_version_and_percentile_helpers():
    assert extract_version({"version": "1.2.3"}) == "1.2.3"
    assert extract_version({"Commit": "deadbeef"}) == "deadbeef"
    assert extract_version({"app": {"git_sha": "cafe"}}) == "cafe"
    assert extract_version({"version": True, "status": "ok"}) is None
    assert extract_version({"version": "<!channel> `x`"}) == "channel x"  # no Slack markup smuggled in
    assert extract_version(["1.0"]) is None
    assert percentile([], 95) is None
    assert percentile([10.0], 95) == 10.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0
