"""Billing fixtures: a fresh localstripe per test and a live bot whose STRIPE_API_BASE points at it."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from tests.support.harness import WEBHOOK_SECRET, Bot, flatten, make_settings
from tests.support.localstripe import LocalStripe, post_event
from tests.support.net import free_port


@pytest.fixture
def localstripe():
    server = LocalStripe().start()
    yield server
    server.stop()


class StripeBot:
    """The live bot plus what billing tests need: signed webhook posts and a look at the tables."""

    def __init__(self, bot: Bot, stripe: LocalStripe | None):
        self.bot = bot
        self.stripe = stripe
        self.webhook_url = f"{bot.url}/webhooks/stripe"

    def __getattr__(self, name):
        return getattr(self.bot, name)

    def connect_webhook(self) -> None:
        self.stripe.register_webhook(self.webhook_url, WEBHOOK_SECRET)

    def ask(self, text: str, *, user: str, timeout: float = 20) -> tuple[str, dict]:
        """Run a slow command; returns the acknowledgement text and the answer posted to response_url."""
        url = self.bot.response_url()
        response = self.bot.slash(text, user=user, response_url=url)
        assert response.status_code == 200, response.text
        return flatten(response.json()), self.bot.wait_response(url, timeout=timeout)

    def answer(self, text: str, *, user: str, timeout: float = 20) -> str:
        ack, answer = self.ask(text, user=user, timeout=timeout)
        return flatten(answer)

    def click(self, action: str, value: str, *, user: str, timeout: float = 20) -> str:
        return flatten(self.bot.click_and_wait(f"revops:{action}", value, user=user, timeout=timeout))

    def post_event(self, event, **kw):
        return post_event(self.bot.http, WEBHOOK_SECRET, event, **kw)

    def query(self, stmt):
        async def go():
            async with self.bot.db() as db:
                async with db.transaction() as session:
                    return list((await session.execute(stmt)).all())
        return asyncio.run(go())

    def rows(self, model, *where):
        return [r[0] for r in self.query(select(model).where(*where))]

    def wait_rows(self, model, *where, count: int = 1, timeout: float = 15):
        deadline = time.time() + timeout
        while True:
            found = self.rows(model, *where)
            if len(found) >= count:
                return found
            if time.time() > deadline:
                raise AssertionError(f"expected {count} {model.__name__} rows, found {len(found)}")
            time.sleep(0.1)


@pytest.fixture
def stripe_bot(tmp_path, db_url, fake_slack, localstripe):
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=localstripe.url)
    bot = Bot(settings, fake_slack).start()
    running = StripeBot(bot, localstripe)
    yield running
    bot.stop()


@pytest.fixture
def webhook_bot(tmp_path, db_url, fake_slack):
    """The live bot without localstripe (Stripe's API base is a closed port): webhook-only tests."""
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, stripe_api_base=f"http://127.0.0.1:{free_port()}")
    bot = Bot(settings, fake_slack).start()
    running = StripeBot(bot, None)
    yield running
    bot.stop()
