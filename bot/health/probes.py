"""Concurrent, bounded HTTP probes of the configured services (`[[services]]`).

Every service is probed at the same time; each probe is bounded by the
service's own `timeout` (connect, read and the whole exchange), so a round
takes as long as its slowest timeout, not the sum. A probe never raises: it
turns every failure into a status and a few words.

    ok        2xx, no slower than `p95_slo`
    degraded  2xx slower than `p95_slo`, or a 3xx / 4xx
    down      5xx, connection refused, DNS failure, timeout, anything else
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Sequence

import httpx

from ..db import assert_no_write_transaction
from ..errors import exception_chain
from ..settings import ServiceCheck

# Enough of a body for a JSON health document; a larger answer is not read further.
MAX_BODY = 64 * 1024
VERSION_KEYS = ("version", "commit", "git_sha", "git_commit", "sha", "revision", "release", "build")
_UNSAFE = re.compile(r"[^\w.\-+:/@ ]")

_ssl_context: ssl.SSLContext | None = None


def ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building it costs tens of milliseconds."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


@dataclass
class ProbeResult:
    name: str
    env: str
    status: str  # ok | degraded | down
    code: int | None
    latency_ms: float | None  # None when nothing answered (refused, DNS)
    version: str | None
    detail: str  # a few words: "HTTP 500", "timed out after 2s", "connection refused"
    slo_ms: float
    timeout_s: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.env)


def make_client(connections: int = 100) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl_context(),
        follow_redirects=False,  # a redirect is itself a finding (degraded)
        limits=httpx.Limits(max_connections=max(connections, 10), max_keepalive_connections=0),
        headers={"User-Agent": "revops-health/1", "Accept": "application/json"},
    )


async def probe_services(checks: Sequence[ServiceCheck], client: httpx.AsyncClient | None = None) -> list[ProbeResult]:
    """Probe every service concurrently; results in the order of `checks`."""
    if not checks:
        return []
    assert_no_write_transaction("health probes")
    own = client is None
    client = client or make_client(len(checks))
    try:
        return list(await asyncio.gather(*(probe_one(client, check) for check in checks)))
    finally:
        if own:
            await client.aclose()


async def probe_one(client: httpx.AsyncClient, check: ServiceCheck) -> ProbeResult:
    timeout = max(check.timeout.total_seconds(), 0.001)
    slo_ms = check.p95_slo.total_seconds() * 1000

    def result(status: str, detail: str, code: int | None = None, latency: float | None = None,
               version: str | None = None) -> ProbeResult:
        return ProbeResult(check.name, check.env, status, code, latency, version, detail, slo_ms, timeout)

    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", check.url, timeout=httpx.Timeout(timeout)) as response:
                body = await _read_some(response)
        latency = (time.perf_counter() - started) * 1000
    except (TimeoutError, httpx.TimeoutException):
        latency = (time.perf_counter() - started) * 1000
        return result("down", f"timed out after {_seconds(timeout)}", latency=latency)
    except httpx.ConnectError as exc:
        return result("down", _connect_failure(exc))
    except (httpx.UnsupportedProtocol, httpx.InvalidURL):
        return result("down", "invalid URL")
    except httpx.RemoteProtocolError:
        return result("down", "bad HTTP answer (connection closed)")
    except httpx.HTTPError as exc:
        return result("down", f"request failed ({type(exc).__name__})")
    except OSError as exc:
        return result("down", f"request failed ({type(exc).__name__})")

    code = response.status_code
    version = extract_version(_json(body, response.headers.get("content-type", "")))
    if code >= 500:
        return result("down", f"HTTP {code}", code, latency, version)
    if code >= 300:
        return result("degraded", f"HTTP {code}", code, latency, version)
    if latency > slo_ms:
        return result("degraded", f"slower than its SLO ({latency:.0f} ms > {slo_ms:.0f} ms)", code, latency, version)
    return result("ok", f"HTTP {code}", code, latency, version)


async def _read_some(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_BODY:
            break
    return b"".join(chunks)[:MAX_BODY]


def _json(body: bytes, content_type: str) -> Any:
    if not body or ("json" not in content_type and not body.lstrip().startswith(b"{")):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def extract_version(data: Any) -> str | None:
    """The version or commit a JSON health document carries (top level, or one level down)."""
    if not isinstance(data, dict):
        return None
    found = _version_in(data)
    if found:
        return found
    for value in data.values():
        if isinstance(value, dict):
            found = _version_in(value)
            if found:
                return found
    return None


def _version_in(data: dict) -> str | None:
    lowered = {str(k).lower(): v for k, v in data.items()}
    for key in VERSION_KEYS:
        value = lowered.get(key)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            continue
        text = _UNSAFE.sub("", str(value)).strip()[:64]
        if text:
            return text
    return None


def _connect_failure(exc: BaseException) -> str:
    seen = exception_chain(exc, limit=8)
    for err in seen:
        if isinstance(err, socket.gaierror):
            return "DNS failure"
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
    words = " ".join(str(err).lower() for err in seen)
    if "name or service not known" in words or "name resolution" in words or "nodename" in words \
            or "getaddrinfo" in words or "no address associated" in words:
        return "DNS failure"
    if "refused" in words or "errno 111" in words:
        return "connection refused"
    if "ssl" in words or "certificate" in words:
        return "TLS handshake failed"
    return "connection failed"


def _seconds(value: float) -> str:
    return f"{value:g}s" if value >= 1 else f"{value * 1000:.0f}ms"
