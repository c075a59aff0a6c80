"""/healthz, /readyz (migrations at head), /metrics, and no secret anywhere."""


from sqlalchemy import text

from tests.support.harness import ADMIN, APPROVER, RESPONDER, SECRETS, VIEWER


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
    import json

    response = bot.slash("dryrun status", user=VIEWER)
    rid = response.headers["x-request-id"]
    lines = [json.loads(line) for line in captured_logs]
    mine = [line for line in lines if line["request_id"] == rid]
    assert any(line["msg"] == "dryrun → ok" and line["logger"] == "revops.router" for line in mine)
    assert all({"ts", "level", "logger", "msg", "request_id"} <= set(line) for line in lines)


def test_slack_endpoint_answers_in_words_when_slack_is_not_configured_or_bolt_fails(bot, captured_logs, monkeypatch):
    """POST /slack/events goes straight to bolt (web/slack_route.py), around FastAPI: its error
    answers and the request id are kept there."""
    runtime = bot.runtime
    monkeypatch.setattr(runtime, "slack_handler", None)
    r = bot.http.post("/slack/events", content="x=1", headers={"X-Request-Id": "rid-unconfigured"})
    assert r.status_code == 503 and "SLACK_SIGNING_SECRET" in r.json()["error"]
    assert r.headers["x-request-id"] == "rid-unconfigured"
    monkeypatch.undo()

    async def broken(_request):
        raise RuntimeError("bolt broke")

    monkeypatch.setattr(runtime.slack_handler, "handle", broken)
    r = bot.http.post("/slack/events", content="x=1", headers={"X-Request-Id": "rid-broken"})
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "Traceback" not in r.text and r.headers["x-request-id"] == "rid-broken"
    assert any("Slack request failed" in line and "rid-broken" in line for line in captured_logs)
    monkeypatch.undo()
    assert bot.slash("help").status_code == 200  # and the path works again
