"""Stripe failures: a clear sentence for the person who asked, and nothing half-written."""

import asyncio
import socket
import threading
import time

import pytest

from bot.billing.models import StripeCustomer, StripeEvent, StripeSubscription
from bot.billing.stripe_client import StripeClient
from bot.errors import UpstreamError

from tests.support.harness import APPROVER, RESPONDER, VIEWER, flatten
from tests.support.net import free_port


def _mirrored(stripe_bot):
    stripe_bot.connect_webhook()
    stripe = stripe_bot.stripe
    stripe.create_plan("pro-monthly")
    customer = stripe.create_customer("ada@example.com", name="Ada Lovelace", user_id="acct_ada")
    sub = stripe.create_subscription(customer["id"])
    stripe_bot.wait_rows(StripeSubscription, StripeSubscription.id == sub["id"])
    return customer, sub


def _snapshot(stripe_bot):
    return [(r.id, r.status, r.version) for r in stripe_bot.rows(StripeSubscription)], \
           [(r.id, r.email, r.version) for r in stripe_bot.rows(StripeCustomer)], \
           sorted(e.id for e in stripe_bot.rows(StripeEvent))


def _timed_ask(stripe_bot, text, user):
    started = time.perf_counter()
    url = stripe_bot.response_url()
    response = stripe_bot.slash(text, user=user, response_url=url)
    acked = time.perf_counter() - started
    answer = stripe_bot.wait_response(url, timeout=20)
    return flatten(response.json()), flatten(answer), acked, time.perf_counter() - started


def test_localstripe_killed_customer_view_falls_back_to_the_mirror(stripe_bot):
    customer, sub = _mirrored(stripe_bot)
    stripe_bot.stripe.kill()
    ack, text, acked, answered = _timed_ask(stripe_bot, "customer ada@example.com", VIEWER)
    assert "Working on it" in ack and acked < 1.5
    assert answered < 3.0  # connection refused, one retry: the answer follows within Slack's ack window
    assert "Stripe is unreachable (connection refused): showing the local mirror only." in text
    assert f"{sub['id']}: — | active, pro-monthly" in text
    assert "Traceback" not in text and "sk_test" not in text


def test_localstripe_killed_sync_writes_nothing(stripe_bot):
    customer, sub = _mirrored(stripe_bot)
    stripe_bot.stripe.cancel_subscription(sub["id"])  # Stripe changed, and the mirror will hear of it ...
    stripe_bot.stripe.kill()  # ... never: Stripe dies before the webhook goes out (1 s later)
    before = _snapshot(stripe_bot)
    ack, text, acked, answered = _timed_ask(stripe_bot, f"sync {customer['id']}", RESPONDER)
    assert "Working on it" in ack and answered < 3.0
    assert "Stripe is unreachable (connection refused); nothing was changed" in text
    assert _snapshot(stripe_bot) == before
    audit = stripe_bot.admin_get("/flags")  # the bot itself is fine
    assert audit.status_code == 200


def test_localstripe_killed_between_reconcile_and_replay(stripe_bot):
    stripe = stripe_bot.stripe
    stripe.mute_webhook()
    stripe.create_plan("pro-monthly")
    customer = stripe.create_customer("lin@example.com", user_id="acct_lin")
    stripe.create_subscription(customer["id"])
    answer = stripe_bot.ask("reconcile", user=RESPONDER)[1]
    [button] = [b for b in answer["blocks"][-1]["elements"] if b["action_id"] == "revops:reconcile.replay_missed"]
    stripe.kill()
    started = time.perf_counter()
    text = stripe_bot.click("reconcile.replay_missed", button["value"], user=APPROVER)
    assert time.perf_counter() - started < 3.0
    assert "Stripe is unreachable (connection refused); nothing was changed" in text
    assert stripe_bot.rows(StripeEvent) == [] and stripe_bot.rows(StripeSubscription) == []
    text = stripe_bot.answer(f"replay evt_{'x' * 14}", user=RESPONDER)
    assert ("Stripe is unreachable (connection refused), and the bot has no stored copy of evt_xxxxxxxxxxxxxx; "
            "nothing was changed") in text


def test_a_hung_stripe_gets_an_answer_in_time_and_writes_nothing(stripe_bot, hanging_server):
    """Stripe accepts the connection and never answers: the command is acknowledged at once, the
    person gets a sentence when the call's time budget runs out, and nothing was half-applied."""
    customer, sub = _mirrored(stripe_bot)
    services = stripe_bot.runtime.services
    real = services.stripe
    # Each request would wait 5 s: the 1.5 s budget for the whole call runs out first, every time.
    services.stripe = StripeClient("sk_test_hung", api_base=hanging_server, request_timeout=5.0, call_budget=1.5)
    try:
        before = _snapshot(stripe_bot)
        ack, text, acked, answered = _timed_ask(stripe_bot, f"sync {customer['id']}", RESPONDER)
        assert "Working on it" in ack and acked < 1.5
        assert answered < 4.0, answered  # the 1.5 s budget, and slack for a loaded CI machine
        assert "Stripe did not answer within 1.5 s" in text, text
        assert "nothing was changed" in text and "sk_test" not in text
        assert _snapshot(stripe_bot) == before
        ack, text, acked, answered = _timed_ask(stripe_bot, "customer ada@example.com", VIEWER)
        assert acked < 1.5 and answered < 4.0
        assert "showing the local mirror only" in text and sub["id"] in text
    finally:
        services.stripe = real


# -- the gateway on its own ---------------------------------------------------------------------------


@pytest.fixture
def hanging_server():
    """Accepts connections and never answers (a hung Stripe)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


async def test_a_hung_stripe_is_cut_off_by_the_time_budget(hanging_server):
    client = StripeClient("sk_test_x", api_base=hanging_server, request_timeout=0.5, call_budget=1.0)
    started = time.perf_counter()
    with pytest.raises(UpstreamError) as err:
        await client.retrieve("customer", "cus_1")
    assert time.perf_counter() - started < 1.6
    assert str(err.value) in ("Stripe did not answer within 1 s (fetching cus_1); nothing was changed",
                              "Stripe is unreachable (timed out); nothing was changed")
    await client.aclose()


async def test_connection_refused_is_one_sentence():
    client = StripeClient("sk_test_x", api_base=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamError, match=r"^Stripe is unreachable \(connection refused\); nothing was changed$"):
        await client.list("event", created={"gte": 0})
    await client.aclose()


async def test_not_configured_and_bad_key(localstripe):
    with pytest.raises(UpstreamError, match="STRIPE_SECRET_KEY is missing"):
        await StripeClient(None).retrieve("customer", "cus_1")
    client = StripeClient("pk_test_not_a_secret_key", api_base=localstripe.url)
    with pytest.raises(UpstreamError, match="Stripe refused the API key"):
        await client.retrieve("customer", "cus_1")
    await client.aclose()


async def test_gateway_reads_localstripe(localstripe):
    localstripe.create_plan("basic")
    for i in range(12):
        localstripe.create_customer(f"c{i}@example.com", card=False)
    client = StripeClient(localstripe.api_key, api_base=localstripe.url)
    assert await client.retrieve("customer", "cus_missing") is None
    assert len(await client.list("customer", limit=5)) == 12  # auto-paginated
    assert [c["email"] for c in await client.customers_by_email("c3@example.com")] == ["c3@example.com"]
    await asyncio.sleep(0)
    await client.aclose()
