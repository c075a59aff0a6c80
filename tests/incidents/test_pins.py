"""📌 to the timeline (issue 19 item 3): a signed `reaction_added` of `[incidents] pin_emoji` on a
message in a channel with an open incident puts the message — its text as data, its author, its
permalink, its own time — on the timeline once, in time order; `reaction_removed` takes it off
when no pin reaction is left. Through the fake Slack Web API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from bot.models import AuditRecord
from tests.incidents.conftest import timeline
from tests.incidents.test_web import link_of
from tests.support.harness import CHANNEL, RESPONDER, VIEWER, flatten, mrkdwn_texts, shown

ADA, GRACE = "U0ADA", "U0GRACE"
OTHER_CHANNEL = "C0ELSEWHERE"
START = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)  # the FakeClock's start: the declaration


def ts_at(minutes: float, micro: int = 100) -> str:
    return f"{int((START + timedelta(minutes=minutes)).timestamp())}.{micro:06d}"


def reaction(kind: str, ts: str, *, user: str = VIEWER, emoji: str = "pushpin", channel: str = CHANNEL) -> dict:
    return {"type": kind, "user": user, "reaction": emoji, "item_user": ADA,
            "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": f"{START.timestamp() + 900:.6f}"}


async def react(bot, fake_slack, ts: str, *, user: str = VIEWER, emoji: str = "pushpin", remove: bool = False,
                channel: str = CHANNEL) -> None:
    """`user` adds (or takes back) the reaction in Slack, Slack sends the signed event; then wait
    until the bot has done what it does with it."""
    fake_slack.react(channel, ts, emoji, user, remove=remove)
    response = bot.event(reaction("reaction_removed" if remove else "reaction_added", ts, user=user, emoji=emoji,
                                  channel=channel))
    assert response.status_code == 200, response.text
    await bot.drain()


async def pins(services, incident_id: int = 1):
    return [e for e in await timeline(services, incident_id) if e.kind == "pin"]


async def audit_of(services, command: str) -> list[AuditRecord]:
    async with services.db.transaction() as s:
        return list((await s.execute(select(AuditRecord).where(AuditRecord.command == command)
                                     .order_by(AuditRecord.id))).scalars().all())


def logged(lines: list[str], level: str) -> list[str]:
    """The messages revops' 📌 listener logged at `level`."""
    entries = [json.loads(line) for line in lines]
    return [e["msg"] for e in entries if e["level"] == level and e["logger"].startswith("revops")]


def reads(fake_slack) -> list:
    return [c for m in ("conversations.history", "conversations.replies", "chat.getPermalink", "reactions.get")
            for c in fake_slack.calls_of(m)]


async def test_a_pinned_message_is_on_the_timeline_at_its_own_time_once(ibot, services, fake_slack, clock):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    clock.advance(timedelta(minutes=5))
    ibot.slash_text("incident update rolled back the deploy", user=RESPONDER)
    said = fake_slack.put_message(CHANNEL, "the provider status page says degraded since 11:55", user=ADA,
                                  ts=ts_at(3, 123456))

    await react(ibot, fake_slack, said, user=VIEWER)  # anyone may pin: a viewer's reaction counts
    [entry] = await pins(services)
    assert entry.text == "Pinned message: the provider status page says degraded since 11:55"
    assert entry.actor == ADA  # the author, not who reacted
    assert entry.at == START + timedelta(minutes=3, microseconds=123456)  # the message's time, not the event's
    assert entry.source_ts == said
    assert entry.source_permalink == f"https://revops-test.slack.com/archives/{CHANNEL}/p{said.replace('.', '')}"
    assert entry.data["pinned_by"] == VIEWER
    [history] = fake_slack.calls_of("conversations.history")
    assert (history.params["channel"], history.params["latest"], history.params["limit"]) == (CHANNEL, said, "1")
    assert history.params["inclusive"] in ("1", "true")
    assert fake_slack.calls_of("conversations.replies") == []  # found in the history: not a thread reply
    [record] = await audit_of(services, "incident pin")
    assert (record.actor, record.subject, record.args) == (VIEWER, "incident:1", {"channel": CHANNEL, "ts": said})

    # in time order: declared 12:00, the message 12:03, the update 12:05 (written before the pin)
    lines = ibot.slash_text("incident timeline", user=VIEWER).splitlines()
    order = [i for i, line in enumerate(lines) for needle in ("Declared P1", "Pinned message", "Update: rolled back")
             if needle in line]
    assert len(order) == 3 and order == sorted(order), lines
    assert "12:03 UTC" in next(line for line in lines if "Pinned message" in line)
    permalink = f"<{entry.source_permalink}|in Slack>"  # its link, from Slack's chat.getPermalink
    assert permalink in next(line for line in lines if "Pinned message" in line)
    page = ibot.http.get(link_of(ibot)).text
    assert page.index("Declared P1") < page.index("Pinned message") < page.index("Update: rolled back")
    assert f'<a href="{entry.source_permalink}">in Slack</a>' in page

    # a second 📌, by someone else: still once (and nothing more is audited)
    await react(ibot, fake_slack, said, user=RESPONDER)
    assert len(await pins(services)) == 1
    assert len(await audit_of(services, "incident pin")) == 1


async def test_another_emoji_or_a_channel_without_an_open_incident_pins_nothing(ibot, services, fake_slack):
    ibot.slash_text("incident declare P2 billing invoices stuck", user=RESPONDER)
    here = fake_slack.put_message(CHANNEL, "eyes on it", user=ADA, ts=ts_at(1))
    elsewhere = fake_slack.put_message(OTHER_CHANNEL, "unrelated chatter", user=ADA, ts=ts_at(2))

    await react(ibot, fake_slack, here, emoji="eyes")
    await react(ibot, fake_slack, elsewhere, channel=OTHER_CHANNEL)
    assert await pins(services) == []
    assert reads(fake_slack) == []  # neither was worth a Slack read
    assert await audit_of(services, "incident pin") == []

    # a resolved incident's channel has no open incident either
    ibot.slash_text("incident resolve a stuck queue", user=RESPONDER)
    await react(ibot, fake_slack, here)
    assert await pins(services) == [] and reads(fake_slack) == []


async def test_the_pin_comes_off_when_no_pin_reaction_is_left(ibot, services, fake_slack):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    said = fake_slack.put_message(CHANNEL, "rollback done", user=ADA, ts=ts_at(2), reactions={"tada": [GRACE]})
    await react(ibot, fake_slack, said, user=VIEWER)
    await react(ibot, fake_slack, said, user=RESPONDER)
    assert len(await pins(services)) == 1

    await react(ibot, fake_slack, said, user=VIEWER, remove=True)  # the responder's 📌 is still there
    assert len(await pins(services)) == 1
    assert len(fake_slack.calls_of("reactions.get")) == 1

    await react(ibot, fake_slack, said, user=RESPONDER, remove=True)  # none left (the 🎉 does not count)
    assert await pins(services) == []
    [record] = await audit_of(services, "incident unpin")
    assert (record.actor, record.subject) == (RESPONDER, "incident:1")

    # removing another emoji, or a message that was never pinned, reads nothing from Slack
    before = len(reads(fake_slack))
    await react(ibot, fake_slack, said, user=GRACE, emoji="tada", remove=True)
    other = fake_slack.put_message(CHANNEL, "never pinned", user=ADA, ts=ts_at(4), reactions={"pushpin": [ADA]})
    await react(ibot, fake_slack, other, user=ADA, remove=True)
    assert len(reads(fake_slack)) == before

    # pinned again later: back on the timeline, at the message's own time
    await react(ibot, fake_slack, said, user=GRACE)
    [entry] = await pins(services)
    assert entry.at == START + timedelta(minutes=2, microseconds=100) and entry.data["pinned_by"] == GRACE


async def test_a_reply_in_a_thread_is_read_from_its_thread(ibot, services, fake_slack):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    parent = fake_slack.put_message(CHANNEL, "what do we know?", user=GRACE, ts=ts_at(1))
    reply = fake_slack.put_message(CHANNEL, "the card processor times out after 30 s", user=ADA, ts=ts_at(2),
                                   thread_ts=parent)
    fake_slack.put_message(CHANNEL, "a later top-level message", user=GRACE, ts=ts_at(3))

    await react(ibot, fake_slack, reply)
    [entry] = await pins(services)
    assert entry.text == "Pinned message: the card processor times out after 30 s"
    assert entry.actor == ADA and entry.at == START + timedelta(minutes=2, microseconds=100)
    assert entry.data["thread_ts"] == parent
    assert entry.source_permalink.endswith(f"?thread_ts={parent}&cid={CHANNEL}")
    [replies] = fake_slack.calls_of("conversations.replies")
    assert (replies.params["channel"], replies.params["ts"]) == (CHANNEL, reply)


async def test_the_message_text_stays_data_in_what_the_bot_shows(ibot, services, fake_slack):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    # as Slack sends what someone typed: "@channel *bold* @ada <https://evil.example|re-auth here> 1 < 2 & x"
    raw = ("<!channel> *bold* <@U0X123|ada> <https://evil.example/login|re-auth here> <!here> 1 &lt; 2 &amp; x "
           + "word " * 200 + "THE END")
    said = fake_slack.put_message(CHANNEL, raw, user=ADA, ts=ts_at(1))
    await react(ibot, fake_slack, said)
    [entry] = await pins(services)
    typed = "@channel *bold* @ada re-auth here (https://evil.example/login) @here 1 < 2 & x "
    assert entry.text.startswith("Pinned message: " + typed) and entry.text.endswith("THE END")  # stored whole

    url = ibot.response_url()
    response = ibot.slash("incident timeline", user=VIEWER, response_url=url)
    payload = response.json() if "Working on it" not in flatten(response.json()) else ibot.wait_response(url)
    sent = "\n".join(mrkdwn_texts(payload))
    for token in ("<!channel>", "<!here>", "<@U0X123", "<https://evil.example"):
        assert token not in sent, token
    assert "*bold*" not in sent  # its stars are inert: shown as typed, never bold
    line = next(line for line in shown(sent).splitlines() if "Pinned message" in line)
    assert typed in line and "THE END" not in line  # clipped in Slack…
    page = ibot.http.get(link_of(ibot)).text
    assert "re-auth here (https://evil.example/login)" in page and "1 &lt; 2 &amp; x" in page
    assert "THE END" in page and 'href="https://evil.example' not in page  # …whole on the page, as text


async def test_a_failed_slack_read_pins_nothing_and_says_so(ibot, services, fake_slack, captured_logs):
    ibot.slash_text("incident declare P1 checkout conversion down", user=RESPONDER)
    said = fake_slack.put_message(CHANNEL, "rollback done", user=ADA, ts=ts_at(2))
    fake_slack.fail("chat.getPermalink", status=200, error="internal_error")
    await react(ibot, fake_slack, said)
    assert await pins(services) == []
    assert any("could not read a message pinned in" in msg and "internal_error" in msg
               for msg in logged(captured_logs, "warning")), logged(captured_logs, "warning")

    await react(ibot, fake_slack, said, user=RESPONDER)  # Slack answers again: pinned
    assert len(await pins(services)) == 1
    fake_slack.fail("reactions.get", status=500, times=5)
    await react(ibot, fake_slack, said, user=RESPONDER, remove=True)
    assert len(await pins(services)) == 1  # unknown whether a pin is left: it stays
    assert any("stays on the timeline" in msg for msg in logged(captured_logs, "warning"))
    assert logged(captured_logs, "error") == logged(captured_logs, "critical") == []
