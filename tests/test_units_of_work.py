"""No network call inside a write transaction (issue 13, item 4), end to end through real HTTP.

`customer <account>` reads the database, then waits on a hung Stripe. While it waits, a grant, a
signed Stripe webhook and `dryrun on` each complete — on SQLite (one writer at a time) and on
PostgreSQL — because the read runs in a read unit that holds no write lock."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import httpx
import pytest

from bot.billing import ledger
from bot.billing.models import StripeEvent
from bot.flags import read_flags

from tests.support.harness import (ADMIN, CHANNEL, RESPONDER, SIGNING_SECRET, VIEWER, WEBHOOK_SECRET, Bot,
                                   flatten, make_settings)
from tests.support.hung import HungServer
from tests.support.localstripe import make_event, signed_headers
from tests.support.slack_requests import sign, slash_body


@pytest.fixture
def hung_stripe():
    server = HungServer().start()
    yield server
    server.stop()


@pytest.fixture
def hung_bot(tmp_path, db_url, fake_slack, hung_stripe):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=hung_stripe.url)
    running = Bot(settings, fake_slack).start()

    async def seed():
        async with running.db() as db, db.transaction() as s:
            await ledger.ensure_account(s, "acct_hung", stripe_customer_id="cus_hung", email="hung@example.com",
                                        at=datetime.now(timezone.utc))

    asyncio.run(seed())
    yield running
    running.stop()


async def _slash(http: httpx.AsyncClient, bot: Bot, text: str, *, user: str) -> httpx.Response:
    body = slash_body(text, user=user, channel=CHANNEL, response_url=bot.response_url())
    return await http.post("/slack/events", content=body, headers=sign(SIGNING_SECRET, body))


def _responded(bot: Bot, url: str) -> bool:
    key = url.rsplit("/", 1)[-1]
    return any(c.key == key for c in bot.slack.responses_list())


async def test_writers_do_not_wait_behind_a_read_that_waits_on_stripe(hung_bot, hung_stripe):
    bot = hung_bot
    async with httpx.AsyncClient(base_url=bot.url, timeout=30) as http:
        customer_url = bot.response_url()
        body = slash_body("customer acct_hung", user=VIEWER, channel=CHANNEL, response_url=customer_url)
        ack = await http.post("/slack/events", content=body, headers=sign(SIGNING_SECRET, body))
        assert ack.status_code == 200 and "Working on it" in flatten(ack.json())
        # The customer view has read the account (the database) and is now waiting on Stripe.
        assert await asyncio.to_thread(hung_stripe.requested.wait, 10)
        assert hung_stripe.paths == ["/v1/customers/cus_hung"]

        event = make_event("customer.created", {"id": "cus_webhook", "object": "customer", "email": "w@example.com",
                                                "name": "Web Hook", "metadata": {"user_id": "acct_webhook"}})
        payload = json.dumps(event)

        async def webhook():
            return await http.post("/webhooks/stripe", content=payload, headers=signed_headers(WEBHOOK_SECRET, payload))

        grant, delivered, dryrun = await asyncio.gather(
            asyncio.wait_for(_slash(http, bot, "grant acct_hung 10 goodwill while Stripe hangs", user=RESPONDER), 1.0),
            asyncio.wait_for(webhook(), 1.0),
            asyncio.wait_for(_slash(http, bot, "dryrun on", user=ADMIN), 1.0),
        )
        # Each finished, and the customer view is still waiting on Stripe.
        assert not hung_stripe.released.is_set() and not _responded(bot, customer_url)

        assert grant.status_code == 200 and "posted for approval" in flatten(grant.json()), flatten(grant.json())
        assert delivered.status_code == 200, delivered.text
        assert dryrun.status_code == 200 and "Dry-run is now on" in flatten(dryrun.json()), flatten(dryrun.json())
        async with bot.db() as db, db.reading() as session:
            assert (await session.get(StripeEvent, event["id"])).status == "processed"
            assert (await read_flags(session)).dry_run is True

        hung_stripe.release()
        answer = flatten(await asyncio.to_thread(bot.wait_response, customer_url, 15))
        assert "Customer cus_hung" in answer and "customer cus_hung is unknown to Stripe" in answer, answer
