"""/healthz, /readyz (migrations at head), /metrics, no secret anywhere; garbage from outside gets
a 4xx in words and nothing loud in the log; the database down is a 503 in words everywhere; the
pages' security headers."""

import asyncio
import io
import json
import logging
import time

import asyncpg
import pytest
from sqlalchemy import text

from bot.db import Database
from bot.logs import OncePerSecond, setup_logging
from tests.support.harness import (ADMIN, ALERTS_TOKEN, APPROVER, BOT_TOKEN, RESPONDER, SECRETS, SIGNING_SECRET,
                                   VIEWER, WEBHOOK_SECRET)
from tests.support.localstripe import make_event, post_event
from tests.support.slack_requests import sign

ALERT = {"stage": "checkout", "metric": "conversion_rate", "baseline_mean": 0.032, "baseline_std": 0.002,
         "current": 0.021}


def test_healthz(bot):
    r = bot.http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True}


async def test_readyz_fails_while_migrations_are_not_at_head(bot):
    r = bot.http.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    async with bot.db() as db:
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0001_core'"))
    r = bot.http.get("/readyz")
    assert r.status_code == 503
    assert "at 0001_core" in r.json()["migrations"]


def test_metrics_count_requests_by_command_and_outcome(bot):
    bot.slash_text("help", user=VIEWER)
    bot.slash_text("dryrun on", user=VIEWER)
    body = bot.http.get("/metrics").text
    assert 'revops_requests_total{command="help",outcome="ok"}' in body
    assert 'revops_requests_total{command="dryrun",outcome="denied"}' in body
    assert "revops_ack_seconds_bucket" in body


async def test_no_secret_value_in_any_response_slack_call_or_log_line(bot, fake_slack, captured_logs):
    responses = []
    for user, line in [(VIEWER, "help"), (ADMIN, "dryrun on"), (ADMIN, "dryrun status"), (ADMIN, "panic on"),
                       (RESPONDER, "audit"), (APPROVER, "audit"), (ADMIN, "nonsense here"),
                       (ADMIN, "dryrun off")]:
        responses.append(bot.slash(line, user=user).text)
    responses.append(bot.http.get("/flags").text)
    responses.append(bot.admin_get("/flags").text)
    responses.append(bot.http.get("/readyz").text)
    responses.append(bot.http.get("/metrics").text)
    responses.append(bot.http.post("/slack/events", content="x=1").text)
    await bot.wait_posts(2)
    await bot.drain()
    seen = "\n".join(responses) + fake_slack.everything_sent() + "\n".join(captured_logs)
    assert captured_logs, "the bot should have logged something"
    for secret in SECRETS:
        assert secret not in seen


def test_logs_are_json_lines_carrying_the_request_id(bot, captured_logs):
    response = bot.slash("dryrun status", user=VIEWER)
    rid = response.headers["x-request-id"]
    lines = [json.loads(line) for line in captured_logs]
    mine = [line for line in lines if line["request_id"] == rid]
    assert any(line["msg"] == "dryrun → ok" and line["logger"] == "revops.router" for line in mine)
    assert all({"ts", "level", "logger", "msg", "request_id"} <= set(line) for line in lines)


def test_slack_endpoint_answers_in_words_when_slack_is_not_configured_or_bolt_fails(bot, captured_logs, monkeypatch):
    """POST /slack/events goes straight to bolt (web/direct.py), around FastAPI: its error
    answers and the request id are kept there."""
    runtime = bot.runtime
    monkeypatch.setattr(runtime, "slack_handler", None)
    r = bot.post_signed("x=1", extra={"X-Request-Id": "rid-unconfigured"})
    assert r.status_code == 503 and "SLACK_SIGNING_SECRET" in r.json()["error"]
    assert r.headers["x-request-id"] == "rid-unconfigured"
    monkeypatch.undo()

    async def broken(_request):
        raise RuntimeError("bolt broke")

    monkeypatch.setattr(runtime.slack_handler, "handle", broken)
    r = bot.post_signed("x=1", extra={"X-Request-Id": "rid-broken"})
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "Traceback" not in r.text and r.headers["x-request-id"] == "rid-broken"
    assert any("POST /slack/events failed" in line and "rid-broken" in line for line in captured_logs)
    monkeypatch.undo()
    assert bot.slash("help").status_code == 200  # and the path works again


# --- unauthenticated garbage gets a 4xx in words (issue 17, item 4) ----------------------------

def _levels(lines) -> list[tuple[str, str]]:
    return [(entry["level"], entry["msg"]) for entry in map(json.loads, lines)]


def _quiet(lines) -> None:
    """Nothing above WARNING, and no traceback, in what the bot logged."""
    loud = [(level, msg) for level, msg in _levels(lines) if level in ("error", "critical")]
    assert loud == [], loud
    assert not any("Traceback" in line or '"exc"' in line for line in lines)


@pytest.mark.parametrize("change,status,words", [
    ({"X-Slack-Request-Timestamp": "abc"}, 401, "X-Slack-Request-Timestamp must be a Unix time in whole seconds"),
    ({"X-Slack-Request-Timestamp": ""}, 401, "needs X-Slack-Request-Timestamp and X-Slack-Signature"),
    ({"X-Slack-Request-Timestamp": "1.5e9"}, 401, "must be a Unix time in whole seconds"),
    ({"X-Slack-Request-Timestamp": "9" * 5000}, 401, "must be a Unix time in whole seconds"),
    ({"X-Slack-Request-Timestamp": "\u0661\u0667\u0660\u0660"}, 401, "must be a Unix time in whole seconds"),
    ({"X-Slack-Signature": "v0=zz"}, 401, "X-Slack-Signature must be v0= and 64 hexadecimal digits"),
    ({"X-Slack-Signature": "v0=" + "0" * 64}, 401, "the Slack signature does not match"),
    ({"X-Slack-Request-Timestamp": "1000000000"}, 401, "the Slack signature does not match, or the request is older"),
])
def test_malformed_slack_headers_get_401_in_words(bot, captured_logs, change, status, words):
    body = "command=%2Frevops&text=help&user_id=U0VIEWER"
    headers = {**sign(SIGNING_SECRET, body), **change}
    r = bot.http.post("/slack/events", content=body.encode("utf-8"),
                      headers={k: v.encode("utf-8") for k, v in headers.items()})
    assert r.status_code == status and words in r.json()["error"], r.text
    _quiet(captured_logs)


@pytest.mark.parametrize("body,content_type,words", [
    (b"\xff\xfecommand=%2Frevops", "application/x-www-form-urlencoded", "the body is not UTF-8"),
    (b'{"type": "block_actions"', "application/json", "not a Slack payload"),
    (b"[1, 2]", "application/json", "not a Slack payload"),
    (b"payload=%7Bnot+json", "application/x-www-form-urlencoded", "not a Slack payload"),
    (b"payload=%5B%5D", "application/x-www-form-urlencoded", "not a Slack payload"),
    # signed, but not shaped as Slack shapes an interaction (found by tests/test_fuzz_edges.py)
    (b"payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3Anull%2C%22actions%22%3A%5B%5D%7D",
     "application/x-www-form-urlencoded", "not a Slack payload"),
    (b"payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U0ADMIN%22%7D%2C%22actions%22%3A%5B%5D%7D",
     "application/x-www-form-urlencoded", "not a Slack payload"),
    (b'{"type": "event_callback", "event": {"type": "app_mention", "text": ["x"]}}', "application/json",
     "not a Slack payload"),
])
def test_malformed_slack_bodies_get_400_in_words_even_when_signed(bot, captured_logs, body, content_type, words):
    headers = sign(SIGNING_SECRET, body.decode("latin-1"))
    if body.startswith(b"\xff"):
        headers = sign(SIGNING_SECRET, body.decode("latin-1"))  # (a signature cannot make it UTF-8)
    headers["Content-Type"] = content_type
    r = bot.http.post("/slack/events", content=body, headers=headers)
    assert r.status_code in (400, 401) and (words in r.text or "signature" in r.text), r.text
    if not body.startswith(b"\xff"):
        assert r.status_code == 400 and words in r.json()["error"]
    _quiet(captured_logs)


@pytest.mark.parametrize("query", ["exp=%C2%B2&sig=x", "exp=" + "9" * 5000 + "&sig=x", "exp=1&sig=%00",
                                   "exp=1&sig=%C3%A9" + "a" * 62, "exp=-1&sig=zz", "exp=%EF%BC%91&sig=" + "a" * 64,
                                   "exp=1e9&sig=" + "a" * 64, "sig=" + "a" * 64])
def test_malformed_signed_link_parameters_get_403(bot, captured_logs, query):
    for path in ("/incidents/1", "/incidents", "/incidents/%C2%B2"):
        r = bot.http.get(f"{path}?{query}")
        assert r.status_code == 403 and "this link is invalid or has expired" in r.text, (path, r.text)
    _quiet(captured_logs)


async def test_a_client_gone_mid_body_is_dropped_quietly(bot, captured_logs):
    host, port = bot.url.removeprefix("http://").split(":")
    for path in ("/slack/events", "/alerts", "/webhooks/stripe"):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 1000\r\n\r\n{{\"a\": ".encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    deadline = time.monotonic() + 10
    while sum("went away before sending the whole body" in line for line in captured_logs) < 3:
        assert time.monotonic() < deadline, captured_logs
        await asyncio.sleep(0.02)
    _quiet(captured_logs)
    assert bot.slash("help").status_code == 200


def test_every_log_line_goes_through_the_json_formatter_and_redaction(bot):
    """uvicorn's loggers included: `revops serve` runs uvicorn with log_config=None and
    setup_logging points them at the root's one handler."""
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        setup_logging(bot.settings, stream=stream)
        try:
            raise RuntimeError(f"bad token {BOT_TOKEN}")
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
        logging.getLogger("uvicorn.access").warning("client %s sent %s", "127.0.0.1", SIGNING_SECRET)
        for _ in range(50):  # an accept loop out of file descriptors
            logging.getLogger("asyncio").error("socket.accept() out of system resource")
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {line["logger"] for line in lines} == {"uvicorn.error", "uvicorn.access", "asyncio"}
    text = stream.getvalue()
    assert BOT_TOKEN not in text and SIGNING_SECRET not in text and text.count("***") == 2
    assert "RuntimeError: bad token ***" in text  # the traceback, redacted, inside the JSON line
    assert sum(line["logger"] == "asyncio" for line in lines) == 1  # at most once a second


def test_once_per_second_counts_what_it_dropped():
    now = [0.0]
    gate = OncePerSecond(clock=lambda: now[0])

    def record(msg):
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    assert gate.filter(record("accept failed"))
    assert [gate.filter(record("accept failed")) for _ in range(5)] == [False] * 5
    assert gate.filter(record("another thing"))
    now[0] = 1.5
    passed = record("accept failed")
    assert gate.filter(passed) and "(5 more like it dropped in the last second)" in passed.getMessage()
    assert gate.filter(logging.LogRecord("revops.router", logging.INFO, __file__, 1, "x", None, None))


# --- the database down: 503 in words everywhere (item 6) ---------------------------------------

async def test_database_down_means_503_in_words_on_every_endpoint(bot, db_url):
    runtime = bot.runtime
    live = runtime.services.db
    if db_url.startswith("sqlite"):
        dead = Database("sqlite+aiosqlite:////proc/revops-no-such-dir/revops.db")
    else:
        name = db_url.rsplit("/", 1)[1]
        admin = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0]
                                      + "/postgres")
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
        dead = live
    webhooks = bot.app.state.stripe_webhooks
    runtime.services.db = webhooks.db = dead
    try:
        answers = {
            "/flags": bot.admin_get("/flags"),
            "/incidents": bot.admin_get("/incidents"),
            "/incidents/1": bot.admin_get("/incidents/1"),
            "/alerts": bot.http.post("/alerts", json=ALERT, headers={"Authorization": f"Bearer {ALERTS_TOKEN}"}),
            "/readyz": bot.http.get("/readyz"),
            "/webhooks/stripe": post_event(bot.http, WEBHOOK_SECRET, make_event("customer.created", {
                "id": "cus_down", "object": "customer", "email": "down@example.com"})),
        }
        for path, r in answers.items():
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert "database" in r.text or "could not store" in r.text, (path, r.text)
            assert "Traceback" not in r.text and "Internal Server Error" not in r.text
    finally:
        runtime.services.db = webhooks.db = live
        if dead is not live:
            await dead.dispose()


# --- page headers (item 7) -----------------------------------------------------------------------

def test_pages_send_csp_nosniff_no_referrer_and_deny_framing(bot):
    bot.slash_text("incident declare P2 checkout conversion down", user=RESPONDER)
    page = bot.admin_get("/incidents")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"  # the signed links never leave in a Referer
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script" not in page.text
    for other in (bot.http.get("/healthz"), bot.admin_get("/flags"), bot.slash("help"), bot.http.get("/incidents")):
        assert other.headers["x-content-type-options"] == "nosniff"
        assert other.headers["referrer-policy"] == "no-referrer" and other.headers["x-frame-options"] == "DENY"


# --- the direct endpoints (bot/web/direct.py): around FastAPI, what it gave them kept -------------

def test_the_webhook_endpoint_keeps_405_the_request_id_and_the_guards_headers(bot):
    r = bot.http.get("/webhooks/stripe")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = bot.http.put("/slack/events", content=b"x=1")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = post_event(bot.http, WEBHOOK_SECRET, make_event("customer.created", {
        "id": "cus_direct", "object": "customer", "email": "direct@example.com"}))
    assert r.status_code == 200 and r.json()["status"] == "processed", r.text
    assert len(r.headers["x-request-id"]) == 12 and r.headers["x-content-type-options"] == "nosniff"
    assert "revops_stripe_webhooks_total{code=\"200\",status=\"processed\"}" in bot.http.get("/metrics").text


def test_a_direct_endpoint_that_raises_answers_500_or_503_in_words(bot, captured_logs, monkeypatch):
    from bot.billing import routes
    from bot.errors import DatabaseUnavailable

    async def broken(*_args):
        raise RuntimeError("ingest broke")

    monkeypatch.setattr(routes, "ingest", broken)
    r = bot.http.post("/webhooks/stripe", content=b"{}", headers={"X-Request-Id": "rid-webhook"})
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "Traceback" not in r.text and r.headers["x-request-id"] == "rid-webhook"
    assert any("POST /webhooks/stripe failed" in line and "rid-webhook" in line for line in captured_logs)

    async def down(*_args):
        raise DatabaseUnavailable("the database is unavailable; nothing was changed")

    monkeypatch.setattr(routes, "ingest", down)
    r = bot.http.post("/webhooks/stripe", content=b"{}")
    assert r.status_code == 503 and r.headers["retry-after"] == "5" and "database" in r.json()["error"]
    monkeypatch.undo()
    assert post_event(bot.http, WEBHOOK_SECRET, make_event("customer.created", {
        "id": "cus_after", "object": "customer", "email": "after@example.com"})).status_code == 200


def test_an_endpoint_declared_twice_is_refused():
    from bot.web.direct import SLACK_EVENTS, DirectEndpoints

    with pytest.raises(ValueError, match="POST /slack/events is declared twice"):
        DirectEndpoints(None, [SLACK_EVENTS, SLACK_EVENTS])
