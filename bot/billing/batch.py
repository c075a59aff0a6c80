"""Group commit for `POST /webhooks/stripe`: concurrent deliveries share one transaction.

A transaction and its statements cost far more than applying a typical event (on SQLite one
writer at a time, each statement a trip to aiosqlite's thread, every commit synced to disk), so
a webhook request does not open its own: it hands its event to the app's `WebhookGroupCommit`
(the batching itself is bot/groupcommit.py) and awaits the result. One task at a time takes the
events waiting and stores and applies them in ONE transaction with `events.store_and_apply`, the
same function replays and reconcile use, then each request answers. Alone, a delivery is a batch
of one. bench/webhook_ingest.py --plain measures the endpoint without it.

The batch's transaction holds nothing but its events, so it needs no savepoint of its own
(`isolate=False`, two statements fewer): when it fails for any reason but the database being
down — a handler that raises, say — it is rolled back and its events are stored one at a time,
each in its own transaction (`events.store_alone`), where a failing handler's event is stored
as `failed` and the others as usual. When the database is down, every request of the batch
gets the error and answers 503, so Stripe retries.

One instance per app, made and closed by the app's lifespan (bot/billing/routes.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.groupcommit import GroupCommit, Transaction

from .events import Result, store_alone, store_and_apply
from .policy import ACCEPT_ALL, EventPolicy

Item = tuple[dict[str, Any], datetime]  # an event and when it was received


class WebhookGroupCommit(GroupCommit[Item]):
    """The webhook deliveries waiting to be stored, and the one task storing them batch by batch."""

    name = "stripe-webhook-batches"

    def __init__(self, db, policy: EventPolicy = ACCEPT_ALL, max_batch: int | None = None):
        super().__init__(db, max_batch)
        self.policy = policy  # the key's mode, the connected accounts, the pinned version (policy.py)

    async def submit(self, event: dict[str, Any], now: datetime) -> Result:  # type: ignore[override]
        """Store and apply one event with whatever else is waiting; its Result once committed."""
        return await super().submit((event, now))

    async def store_batch(self, transaction: Transaction, items: list[Item]) -> list[Result]:
        async with transaction() as session:
            # The batch's events were received within a few milliseconds: the first one's time is theirs.
            return await store_and_apply(session, [event for event, _ in items], source="webhook", now=items[0][1],
                                         isolate=False, policy=self.policy)

    async def store_one(self, item: Item) -> Result:
        event, now = item
        return await store_alone(self.db, event, now, self.policy)
