"""The harness's `drain`: it returns only once the bot has done what it was asked, so a test
can assert "nothing (more) happened" right after it instead of sleeping first."""

from __future__ import annotations

import asyncio

from bot.outbox import enqueue
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from tests.support.harness import VIEWER, flatten


async def test_drain_waits_for_a_follow_up_after_the_acknowledgement(bot, fake_slack):
    slow = CommandSet("draintest")

    @slow.command("draintest", summary="answers late", role=Role.viewer, slow=True)
    async def late(ctx, args):
        await asyncio.sleep(0.5)  # the slow work itself, not a wait in the test
        return Reply("answered late")

    bot.runtime.services.registry.add(slow)
    url = bot.response_url()
    assert "Working on it" in flatten(bot.slash("draintest", user=VIEWER, response_url=url).json())
    assert fake_slack.responses_list() == []
    await bot.drain()
    [answer] = fake_slack.responses_list()  # there when drain returns, without waiting for it
    assert answer.key == url.rsplit("/", 1)[-1] and "answered late" in flatten(answer.params)


async def test_drain_waits_for_the_outbox_to_deliver_what_is_due(bot, fake_slack):
    async with bot.db() as db, db.transaction() as s:  # queued from another connection: nobody kicks the outbox
        for i in range(3):
            await enqueue(s, channel="C0DRAIN", reply=Reply(f"queued {i}", private=False),
                          at=bot.runtime.services.clock.now())
    await bot.drain()
    assert [p["text"] for p in fake_slack.posted("C0DRAIN")] == ["queued 0", "queued 1", "queued 2"]


def test_drain_sync_does_the_same_for_plain_tests(bot, fake_slack):
    assert "Dry-run is now on" in bot.slash_text("dryrun on")
    bot.drain_sync()
    assert len(fake_slack.posted("C0INCIDENT")) == 1  # the announcement, delivered
