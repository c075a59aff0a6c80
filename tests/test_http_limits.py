"""The HTTP server cannot be held open (issue 17, item 2): `revops serve`'s uvicorn configuration
(`bot.web.guard.server_config`) with its connection guard — header timeouts, a keep-alive
timeout, a bound on connections, body limits per endpoint and a body deadline."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
import uvicorn

from bot.app import create_app
from bot.web.guard import server_config
from tests.support.harness import SIGNING_SECRET, VIEWER, flatten, make_settings
from tests.support.net import free_port
from tests.support.slack_requests import sign, slash_body

HEADER_TIMEOUT = 2.0


class GuardedServer:
    """`revops serve`'s server, on loopback, in a thread."""

    def __init__(self, settings):
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(server_config(self.app, host="127.0.0.1", port=self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def limited(tmp_path, db_url, fake_slack):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, revops_header_timeout=f"{HEADER_TIMEOUT}s",
                             revops_body_timeout="2s", revops_keepalive_timeout="1s", revops_max_connections=1500,
                             revops_body_limits="/alerts=1KiB")
    with GuardedServer(settings) as server:
        yield server


async def _timed(client: httpx.AsyncClient, method: str, path: str, **kw) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await client.request(method, path, **kw)
    return time.perf_counter() - started, response


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closes this connection within `within` seconds (reads what it says)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
        return True
    except ConnectionError:  # reset: closed while the client was still writing
        return True
    except TimeoutError:
        return False


async def test_a_thousand_idle_or_trickling_connections_hold_nothing_open(limited, fake_slack):
    host = "127.0.0.1"
    conns = []
    for i in range(1000):
        reader, writer = await asyncio.open_connection(host, limited.port)
        if i % 3 == 1:  # half a request line, then nothing
            writer.write(b"POST /slack/events HT")
        elif i % 3 == 2:  # headers trickling in
            writer.write(b"POST /alerts HTTP/1.1\r\nHost: x\r\n")
        conns.append((reader, writer))
    opened = time.monotonic()

    async def trickle():
        while time.monotonic() - opened < HEADER_TIMEOUT * 3:
            for i, (_, writer) in enumerate(conns):
                if i % 3 == 2 and not writer.is_closing():
                    try:
                        writer.write(b"X")
                    except (ConnectionError, RuntimeError):
                        pass
            await asyncio.sleep(0.25)

    trickler = asyncio.create_task(trickle())
    body = slash_body("help", user=VIEWER, channel="C0INCIDENT", response_url=fake_slack.response_url("limits"))
    async with httpx.AsyncClient(base_url=limited.url, timeout=10) as client:
        took, health = await _timed(client, "GET", "/healthz")
        assert health.status_code == 200 and took < 1.0, took
        took, help_answer = await _timed(client, "POST", "/slack/events", content=body,
                                         headers=sign(SIGNING_SECRET, body))
        assert help_answer.status_code == 200 and "/revops" in flatten(help_answer.json()) and took < 1.0, took

    # Every one of them is closed by the header timeout (plus a margin for a loaded machine).
    # (The server accepts 1,000 connections over a second or two on a loaded machine: each timer
    # starts at its accept.)
    closed = await asyncio.gather(*(_closed(reader, HEADER_TIMEOUT + 8) for reader, _ in conns))
    trickler.cancel()
    still = [i for i, done in enumerate(closed) if not done]
    assert not still, f"{len(still)} of 1000 connections still open: {still[:10]}"
    assert limited.app.state.connection_guard.timeouts >= 1000
    assert limited.app.state.connection_guard.open == {}
    for _, writer in conns:
        writer.close()


async def test_a_half_sent_request_gets_408_and_an_idle_keepalive_is_closed(limited):
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(4096), HEADER_TIMEOUT + 3)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive in time" in answer
    assert HEADER_TIMEOUT - 0.5 < time.monotonic() - started < HEADER_TIMEOUT + 3
    writer.close()

    # A kept-alive connection that sends nothing after its answer is closed after the keep-alive time.
    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), 5)
    assert first.startswith(b"HTTP/1.1 200")
    assert await _closed(reader, 1.0 + HEADER_TIMEOUT + 2)
    writer.close()


async def test_bodies_have_a_limit_per_endpoint_and_a_deadline(limited):
    async with httpx.AsyncClient(base_url=limited.url, timeout=10) as client:
        big = await client.post("/alerts", content=b"x" * 2048, headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and "larger than 1,024 bytes, the limit for /alerts" in big.json()["error"]
        ok_size = await client.post("/webhooks/stripe", content=b"x" * 2048)
        assert ok_size.status_code == 400  # within its own limit (1 MiB): the signature is what is wrong

    reader, writer = await asyncio.open_connection("127.0.0.1", limited.port)
    writer.write(b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"stage\":")
    answer = b""  # the head and the body may come in separate reads
    while b"did not arrive" not in answer:
        chunk = await asyncio.wait_for(reader.read(4096), 6)
        if not chunk:
            break
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in answer
    writer.close()


async def test_past_the_connection_bound_new_connections_are_refused_at_once(tmp_path, db_url, fake_slack):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, revops_max_connections=20)
    with GuardedServer(settings) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(20)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        refused = await asyncio.wait_for(reader.read(4096), 5)
        assert refused.startswith(b"HTTP/1.1 503") and b"too many open connections" in refused
        for _, w in held:
            w.close()
        writer.close()
