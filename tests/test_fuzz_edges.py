"""hypothesis at every edge the outside world reaches (issue 17 item 8): Slack form bodies and
headers, `/alerts` bodies, Stripe envelopes and signed-link parameters, against a live server on
SQLite and PostgreSQL. Whatever arrives — signed or not, well-formed or not — the answer is
never a 5xx and the bot logs nothing above WARNING and no traceback.

CI runs REVOPS_FUZZ_EXAMPLES (default 200) examples per edge; bench/run_all.py runs 10,000.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from bot.logs import JsonFormatter, RedactSecrets
from tests.support.harness import ALERTS_TOKEN, SECRETS, SIGNING_SECRET, WEBHOOK_SECRET, Bot, make_settings
from tests.support.localstripe import make_event, signed_headers
from tests.support.logcapture import root_records
from tests.support.slack_requests import sign

EXAMPLES = int(os.environ.get("REVOPS_FUZZ_EXAMPLES", "200"))
FUZZ = hsettings(max_examples=EXAMPLES, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

STRIPE_TYPES = [
    "checkout.session.completed", "checkout.session.expired", "checkout.session.async_payment_succeeded",
    "customer.created", "customer.updated", "customer.deleted", "customer.subscription.created",
    "customer.subscription.updated", "customer.subscription.deleted", "invoice.paid", "invoice.payment_failed",
    "invoice.finalized", "invoice.voided", "invoice_payment.paid", "payment_intent.succeeded",
    "payment_intent.payment_failed", "charge.refunded", "charge.dispute.created", "refund.created",
    "charge.succeeded", "some.future_event", "",
]
STRIPE_FIELDS = ["id", "object", "customer", "amount", "amount_total", "amount_paid", "currency", "status",
                 "metadata", "subscription", "invoice", "payment_intent", "items", "lines", "quantity", "email",
                 "name", "created", "period_end", "latest_charge", "charge", "parent", "payment", "mode"]

# JSON values of every type, nested a little
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from(["cus_1", "in_1", "pi_1", "sub_1", "usd", "paid", "<!channel>", "1e308", "\x00"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(STRIPE_FIELDS), inner, max_size=5),
    max_leaves=12,
)
NUMBERISH = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats()
             | st.text(max_size=8) | st.sampled_from(["1e3", "inf", "NaN", 5e-324, 1e308, -0.0]))
SLACK_FIELDS = ["command", "text", "user_id", "channel_id", "response_url", "trigger_id", "team_id", "payload",
                "type", "token", "api_app_id", "user_name", "channel_name"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def edge_bot(request, tmp_path_factory, fake_slack_server):
    tmp = tmp_path_factory.mktemp(f"edges-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp}/revops.db"
    else:
        url = asyncio.run(request.getfixturevalue("pg_server").create_database())
    settings = make_settings(tmp, url, fake_slack_server.api_url, stripe_api_base="http://127.0.0.1:9")
    running = Bot(settings, fake_slack_server).start()
    yield running
    running.stop()


class Lines(list):
    def __repr__(self) -> str:  # (hypothesis shows the fixtures of a falsifying example)
        return f"<{len(self.source)} log lines>"


@pytest.fixture
def logged():
    with root_records(JsonFormatter().format, filters=(RedactSecrets(SECRETS),)) as lines:
        view = Lines()
        view.source = lines
        yield view


def quiet_since(lines: Lines, start: int, what) -> None:
    """Nothing above WARNING and no traceback among the lines logged since `start`."""
    new = [json.loads(line) for line in lines.source[start:]]
    loud = [(entry["level"], entry["msg"]) for entry in new if entry["level"] in ("error", "critical")]
    assert loud == [], (what, loud)
    assert not any("exc" in entry or "Traceback" in entry["msg"] for entry in new), (what, new)


def answered(response, what) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:300])


# --- Slack -----------------------------------------------------------------------------------------

def _slack_body(data) -> str:
    fields = data.draw(st.dictionaries(st.sampled_from(SLACK_FIELDS), st.text(max_size=30), max_size=8))
    if data.draw(st.booleans()):  # an interaction: a JSON payload, well-formed or not
        payload = data.draw(st.one_of(JSON, st.fixed_dictionaries({
            "type": st.sampled_from(["block_actions", "view_submission", "shortcut", "message_action", "x"]),
            "user": st.one_of(JSON, st.fixed_dictionaries({"id": st.sampled_from(["U0ADMIN", "U0VIEWER", ""])})),
            "actions": st.lists(st.fixed_dictionaries({
                "action_id": st.one_of(st.sampled_from(["revops:grant.approve", "revops:incident.ack",
                                                         "revops:nope", "revops:"]), st.text(max_size=20)),
                "value": st.one_of(st.text(max_size=20), JSON)}), max_size=2),
            "channel": st.one_of(JSON, st.fixed_dictionaries({"id": st.just("C0INCIDENT")})),
            "response_url": st.just("http://127.0.0.1:9/r"),
            "trigger_id": st.text(max_size=10),
        })))
        fields["payload"] = data.draw(st.one_of(st.just(json.dumps(payload)), st.text(max_size=40)))
    elif data.draw(st.booleans()):
        fields.update(command="/revops", user_id=data.draw(st.sampled_from(["U0VIEWER", "U0ADMIN", ""])),
                      response_url="http://127.0.0.1:9/r")
    if data.draw(st.booleans()):
        return urlencode(fields)
    return data.draw(st.one_of(st.text(max_size=80), st.just(json.dumps(fields))))


@FUZZ
@given(data=st.data())
def test_slack_bodies_and_headers(edge_bot, logged, data):
    body = _slack_body(data)
    timestamp = data.draw(st.one_of(st.just(int(time.time())), st.integers(min_value=-10, max_value=2**40)))
    headers = sign(SIGNING_SECRET, body, timestamp) if data.draw(st.booleans()) else {}
    broken = data.draw(st.dictionaries(
        st.sampled_from(["X-Slack-Request-Timestamp", "X-Slack-Signature", "Content-Type", "X-Slack-Retry-Num"]),
        st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=70).map(str.strip),
                  st.sampled_from(["application/json", "application/x-www-form-urlencoded", "1.5e9", "v0="])),
        max_size=2))
    headers.update(broken)
    raw = body.encode("utf-8") if data.draw(st.booleans()) else body.encode("utf-8") + b"\xff\xfe"
    start = len(logged.source)
    response = edge_bot.http.post("/slack/events", content=raw, headers=headers)
    answered(response, (body, headers))
    quiet_since(logged, start, (body, headers))


# --- /alerts -------------------------------------------------------------------------------------

@FUZZ
@given(alert=st.one_of(
    JSON,
    st.fixed_dictionaries({"stage": st.one_of(st.text(max_size=30), JSON), "metric": st.one_of(st.text(max_size=30), JSON),
                           "baseline_mean": NUMBERISH, "baseline_std": NUMBERISH, "current": NUMBERISH},
                          optional={"dedupe_key": st.one_of(st.text(max_size=20), JSON),
                                    "severity": st.one_of(st.sampled_from(["P1", "P2", "P3", "P9"]), JSON),
                                    "summary": st.text(max_size=60), "channel": st.text(max_size=12)})),
       token=st.sampled_from([ALERTS_TOKEN, ALERTS_TOKEN, "wrong", "x" * 500]),
       as_text=st.booleans())
def test_alert_bodies(edge_bot, logged, alert, token, as_text):
    body = json.dumps(alert) if not as_text else json.dumps(alert)[:-1]
    start = len(logged.source)
    response = edge_bot.http.post("/alerts", content=body, headers={"Authorization": f"Bearer {token}",
                                                                      "Content-Type": "application/json"})
    answered(response, alert)
    quiet_since(logged, start, alert)


# --- Stripe --------------------------------------------------------------------------------------

@FUZZ
@given(kind=st.sampled_from(STRIPE_TYPES), obj=st.dictionaries(st.sampled_from(STRIPE_FIELDS), JSON, max_size=8),
       extra=st.dictionaries(st.sampled_from(["account", "livemode", "api_version", "created", "data", "id"]),
                             JSON, max_size=2),
       signed=st.sampled_from(["valid", "valid", "stale", "wrong", "none"]), mangle=st.booleans())
def test_stripe_envelopes(edge_bot, logged, kind, obj, extra, signed, mangle):
    event = {**make_event(kind, obj), **extra}
    body = json.dumps(event)
    if mangle:
        body = body[: len(body) // 2]
    headers = {"Content-Type": "application/json"}
    if signed == "valid":
        headers = signed_headers(WEBHOOK_SECRET, body)
    elif signed == "stale":
        headers = signed_headers(WEBHOOK_SECRET, body, int(time.time()) - 3600)
    elif signed == "wrong":
        headers = signed_headers("whsec_not_the_secret", body)
    start = len(logged.source)
    response = edge_bot.http.post("/webhooks/stripe", content=body, headers=headers)
    answered(response, event)
    quiet_since(logged, start, event)


# --- signed links --------------------------------------------------------------------------------

@FUZZ
@given(path=st.one_of(st.sampled_from(["/incidents", "/incidents/1", "/incidents/0", "/incidents/99999999999999999999"]),
                      st.text(max_size=12).map(lambda t: "/incidents/" + quote(t, safe=""))),
       params=st.dictionaries(st.sampled_from(["exp", "sig", "page", "since", "x"]),
                              st.one_of(st.text(max_size=70), st.integers().map(str),
                                        st.sampled_from(["9" * 5000, "1e9", "-1", "²", "a" * 64])), max_size=3))
def test_signed_link_parameters(edge_bot, logged, path, params):
    start = len(logged.source)
    response = edge_bot.http.get(path, params=params)
    answered(response, (path, params))
    assert response.status_code in (307, 400, 401, 403, 404, 422), (path, params, response.status_code)
    quiet_since(logged, start, (path, params))


@pytest.mark.parametrize("field,value", [("api_version", [None]), ("account", {"id": "acct_1"}),
                                         ("livemode", "yes"), ("data", {"object": "in_1"})])
def test_a_signed_envelope_of_the_wrong_shape_is_stored_not_applied(edge_bot, logged, field, value):
    """Found by the fuzzing above: a non-string api_version was a 500."""
    event = {**make_event("invoice.paid", {"id": "in_fuzz", "object": "invoice"}), field: value}
    body = json.dumps(event)
    start = len(logged.source)
    response = edge_bot.http.post("/webhooks/stripe", content=body, headers=signed_headers(WEBHOOK_SECRET, body))
    assert response.status_code == 200 and response.json()["status"] != "processed", response.text
    quiet_since(logged, start, event)
