"""Slack's 3 seconds under overload (issue 17 item 3): with `[slack] queue_depth = 2` and
`overload_limit = 4`, and the router held busy by a gate the test controls, signed commands and
clicks over real HTTP: the first two run, the next two are acknowledged at once with "Working on
it…" and answered on the response_url once released, the rest are refused in words with nothing
run or claimed; a retry of a refused request runs, a retry of an accepted one does not run twice.
On SQLite and PostgreSQL (the claims and the audit are in the database)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import httpx
import pytest
from sqlalchemy import select

from bot.deliveries import delivery_keys
from bot.errors import SettingsError
from bot.models import AuditRecord, SlackRequestClaim
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.settings import load_settings
from tests.support.harness import CHANNEL, ROLES_TOML, SIGNING_SECRET, VIEWER, Bot, flatten, make_settings
from tests.support.slack_requests import block_actions_body, sign, slash_body

LIMITS = 'alerts_channel = "C0ALERTS"\nqueue_depth = 2\noverload_limit = 4\n'


class Gate:
    """Holds every `holdtest` run until the test opens it; counts who entered and who finished."""

    def __init__(self, bot: Bot):
        self.bot = bot
        self.event = asyncio.Event()  # waited on by the server's loop only
        self.entered: list[str] = []
        self.finished: Counter[str] = Counter()

    def open(self) -> None:
        self.bot.server.loop.call_soon_threadsafe(self.event.set)

    def wait_entered(self, count: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while len(self.entered) < count:
            assert time.monotonic() < deadline, f"only {self.entered} entered"
            time.sleep(0.01)


@pytest.fixture
def held(tmp_path, db_url, fake_slack):
    config = tmp_path / "limits.toml"
    config.write_text(ROLES_TOML.replace('alerts_channel = "C0ALERTS"\n', LIMITS))
    bot = Bot(make_settings(tmp_path, db_url, fake_slack.api_url, revops_config=str(config)), fake_slack).start()
    gate = Gate(bot)
    family = CommandSet("holdtest")

    @family.command("holdtest <tag>", summary="waits for the test's gate", role=Role.viewer, mutating=True)
    async def hold(ctx, args):
        gate.entered.append(args["tag"])
        await gate.event.wait()
        gate.finished[args["tag"]] += 1
        return Reply(f"held {args['tag']} done")

    @family.action("press", role=Role.viewer)
    async def press(ctx, value):
        gate.entered.append(value)
        await gate.event.wait()
        gate.finished[value] += 1
        return Reply(f"pressed {value}")

    bot.runtime.services.registry.add(family)
    try:
        yield bot, gate
    finally:
        gate.open()
        bot.stop()


def signed(body: str) -> dict[str, str]:
    return sign(SIGNING_SECRET, body)


def post(bot: Bot, body: str, headers: dict[str, str]) -> httpx.Response:
    """One signed request over its own connection (several are sent from threads at once)."""
    response = httpx.post(f"{bot.url}/slack/events", content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response


def command(bot: Bot, tag: str) -> tuple[str, dict[str, str], str]:
    url = bot.response_url()
    body = slash_body(f"holdtest {tag}", user=VIEWER, channel=CHANNEL, response_url=url)
    return body, signed(body), url


def click(bot: Bot, tag: str) -> tuple[str, dict[str, str], str]:
    url = bot.response_url()
    body = block_actions_body("revops:holdtest.press", tag, user=VIEWER, channel=CHANNEL, response_url=url)
    return body, signed(body), url


def answers(bot: Bot, url: str) -> list[str]:
    key = url.rsplit("/", 1)[-1]
    return [flatten(c.params) for c in bot.slack.responses_list() if c.key == key]


def full_answer(bot: Bot, ack: httpx.Response, url: str) -> str:
    """The answer: in the acknowledgement, or on the response_url after "Working on it…"."""
    text = flatten(ack.json())
    return flatten(bot.wait_response(url)) if "Working on it" in text else text


def in_hand(bot: Bot) -> int:
    return bot.runtime.slack_app.revops_admission.in_hand


async def claims_of(bot: Bot, body: str, headers: dict[str, str], *, click: bool = False) -> list[str]:
    form = parse_qs(body)
    trigger = json.loads(form["payload"][0])["trigger_id"] if click else form["trigger_id"][0]
    keys = delivery_keys(headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"], trigger)
    async with bot.db() as db, db.transaction() as s:
        return list((await s.execute(select(SlackRequestClaim.key).where(SlackRequestClaim.key.in_(keys))))
                    .scalars())


async def audited(bot: Bot, command: str) -> Counter[str]:
    async with bot.db() as db, db.transaction() as s:
        rows = (await s.execute(select(AuditRecord).where(AuditRecord.command == command))).scalars().all()
    return Counter((r.args.get("tag") or r.args.get("value")) for r in rows if r.outcome == "ok")


async def test_commands_past_the_queue_depth_wait_and_past_the_limit_are_refused(held):
    bot, gate = held
    requests = {tag: command(bot, tag) for tag in "123456"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = {tag: pool.submit(post, bot, *requests[tag][:2]) for tag in "12"}
        gate.wait_entered(2)  # both run (and hold the two turns)

        # Past the queue depth: "Working on it…" at once, and the work waits its turn.
        for tag in "34":
            ack = post(bot, *requests[tag][:2])
            assert "Working on it" in flatten(ack.json())
        assert sorted(gate.entered) == ["1", "2"] and in_hand(bot) == 4  # neither of them has started

        # Past the hard bound: refused in words, nothing run, nothing claimed.
        for tag in "56":
            text = flatten(post(bot, *requests[tag][:2]).json())
            assert "revops is overloaded, try again in a minute" in text and "Working on it" not in text
        assert sorted(gate.entered) == ["1", "2"] and in_hand(bot) == 4
        assert await claims_of(bot, *requests["5"][:2]) == []

        # The same request again while it waits its turn: already received, not queued twice.
        again = flatten(post(bot, *requests["3"][:2]).json())
        assert "Already received" in again and in_hand(bot) == 4

        gate.open()
        for tag in "12":
            assert f"held {tag} done" in full_answer(bot, first[tag].result(), requests[tag][2])
    for tag in "34":
        assert "held " + tag + " done" in flatten(bot.wait_response(requests[tag][2]))
    await bot.drain()
    assert in_hand(bot) == 0

    # A retry of a refused request runs (it left no claim); a retry of an accepted one does not.
    assert "held 5 done" in full_answer(bot, post(bot, *requests["5"][:2]), requests["5"][2])
    assert "Already received" in flatten(post(bot, *requests["3"][:2]).json())
    await bot.drain()
    assert gate.finished == Counter({"1": 1, "2": 1, "3": 1, "4": 1, "5": 1})
    assert await audited(bot, "holdtest") == Counter({"1": 1, "2": 1, "3": 1, "4": 1, "5": 1})
    assert answers(bot, requests["6"][2]) == []  # a refusal is in the acknowledgement only


async def test_clicks_past_the_limit_are_refused_and_a_retry_runs_once(held):
    bot, gate = held
    requests = {tag: click(bot, tag) for tag in "12345"}
    for tag in "1234":
        assert post(bot, *requests[tag][:2]).text == ""  # acknowledged at once, whatever follows
    gate.wait_entered(2)
    assert sorted(gate.entered) == ["1", "2"] and in_hand(bot) == 4  # 3 and 4 wait their turn

    assert post(bot, *requests["5"][:2]).text == ""
    refusal = flatten(bot.wait_response(requests["5"][2]))
    assert "revops is overloaded, try again in a minute" in refusal
    assert sorted(gate.entered) == ["1", "2"] and in_hand(bot) == 4
    assert await claims_of(bot, *requests["5"][:2], click=True) == []

    post(bot, *requests["3"][:2])  # the same click again while it waits
    assert "Already received" in flatten(bot.wait_response(requests["3"][2]))
    assert in_hand(bot) == 4

    gate.open()
    await bot.drain()
    for tag in "1234":
        assert any(f"pressed {tag}" in text for text in answers(bot, requests[tag][2])), tag
    post(bot, *requests["5"][:2])  # the refused click, retried: it runs
    post(bot, *requests["1"][:2])  # an accepted one, retried: it does not
    await bot.drain()
    assert any("pressed 5" in text for text in answers(bot, requests["5"][2]))
    assert "Already received" in answers(bot, requests["1"][2])[-1]
    assert gate.finished == Counter({"1": 1, "2": 1, "3": 1, "4": 1, "5": 1})
    assert await audited(bot, "holdtest.press") == Counter({"1": 1, "2": 1, "3": 1, "4": 1, "5": 1})
    assert in_hand(bot) == 0


def test_quick_commands_still_answer_inside_the_acknowledgement(held):
    bot, _ = held
    for _ in range(6):  # more than the limits, one after the other: each finds a free turn
        assert "help" in bot.slash_text("help", user=VIEWER).lower()
    assert in_hand(bot) == 0


def test_the_limits_are_settings_with_defaults(tmp_path):
    defaults = load_settings(revops_config=str(_toml(tmp_path, "")))
    assert (defaults.cfg.slack.queue_depth, defaults.cfg.slack.overload_limit) == (32, 400)
    with pytest.raises(SettingsError, match="overload_limit .* must be at least queue_depth"):
        load_settings(revops_config=str(_toml(tmp_path, "[slack]\nqueue_depth = 8\noverload_limit = 4\n")))
    with pytest.raises(SettingsError, match="queue_depth"):
        load_settings(revops_config=str(_toml(tmp_path, "[slack]\nqueue_depth = 0\n")))


def _toml(tmp_path, text: str):
    path = tmp_path / "limits-only.toml"
    path.write_text(text)
    return path
