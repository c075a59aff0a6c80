"""Typed text and its renderers: plain strings are data everywhere; Slack tokens come only from
typed pieces; every Slack message stays within Slack's limits and is cut only between tokens."""

import re

import pytest
from hypothesis import example, given, settings as hsettings, strategies as st
from slack_sdk.web.async_client import AsyncWebClient

from bot.names import Names
from bot.render_text import plain_text, render_text
from bot.reply import Button, Reply
from bot.slack.blocks import (MAX_BLOCKS, MAX_CHARS, SECTION_CHARS, atoms, fallback_text, message_size, mrkdwn,
                              render_blocks)
from bot.slack.names import users_info_lookup
from bot.templating import render_reply
from bot.text import Channel, Code, Em, Icon, Link, Status, Text, User, clip, from_json, to_json
from tests.support.harness import make_settings, mrkdwn_texts, shown

HOSTILE = ["<!channel>", "<!here>", "<!everyone>", "<!subteam^S1>", "<@U123>", "<#C1>",
           "<https://evil.example|x>", "&amp;"]
RAW_TOKENS = re.compile(r"<[!@#]|<https?:|&amp;amp;")


def slack_texts(blocks) -> list[str]:
    """The mrkdwn texts of a message (plain_text objects Slack shows as is, so they are skipped)."""
    return mrkdwn_texts(blocks)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_plain_text_is_escaped_everywhere_in_a_slack_message(hostile):
    reply = Reply(Text("Incident ", Em(f"summary {hostile}"), " by ", User("U0RESPONDER")),
                  lines=[f"note: {hostile}", Text("reason ", Code(hostile))],
                  fields=[(f"field {hostile}", hostile)], footer=Text(Status("ok"), f" footer {hostile}"),
                  buttons=[Button("Approve", "grants.approve", "1", confirm=f"Approve {hostile}?")])
    blocks = render_blocks(reply)
    texts = slack_texts(blocks) + [fallback_text(reply)]
    escaped = hostile.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    joined = "\n".join(texts)
    assert joined.count(escaped) >= 5
    confirm = blocks[-2]["elements"][0]["confirm"]["text"]
    assert confirm == {"type": "plain_text", "text": f"Approve {hostile}?"}  # Slack shows plain_text as is
    # the only token in the message is the bot's own mention
    assert re.findall(r"<[^>]*>", joined) == ["<@U0RESPONDER>"] * 2


def test_tokens_come_only_from_typed_pieces():
    text = Text(Icon("rotating_light"), " ", Em(Text("Incident ", Code("#4"))), " by ", User("U1"), " in ",
                Channel("C9"), " — ", Link("https://revops.example/i/4?sig=a|b", "page"), " ",
                User("U2", ping=False), " ", Status("failed"))
    assert mrkdwn(text) == (":rotating_light: *Incident `#4`* by <@U1> in <#C9> — "
                            "<https://revops.example/i/4?sig=a%7Cb|page> @U2 :x:")
    assert mrkdwn(text, {"U2": "Dana"}).endswith("@Dana :x:")
    # a link that is not http(s) is shown as text, never as a link
    assert mrkdwn(Text(Link("javascript:alert(1)", "click"))) == "click (javascript:alert(1))"
    # f-strings and slicing drop the pieces: what is left is escaped data
    assert mrkdwn(f"{Text(User('U1'))} <!here>") == "@U1 &lt;!here&gt;"


def test_console_shows_pieces_in_words_and_plain_text_as_typed():
    reply = Reply(Text(Icon("white_check_mark"), " ", Em("Request #4 approved"), " by ", User("U0APPROVER")),
                  lines=["reason: *not* bold <!channel> `x`", Text("see ", Link("https://x.example/p", "the page"))],
                  footer=Text(Status("ok"), " chain verifies"))
    out = render_text(reply, names={"U0APPROVER": "Ada"})
    assert out.splitlines()[0] == "Request #4 approved by @Ada"
    assert "reason: *not* bold <!channel> `x`" in out  # data, exactly as typed
    assert "see the page (https://x.example/p)" in out and "✓ chain verifies" in out
    assert plain_text(Text(User("U9"))) == "@U9"  # no name known: the id


def test_typed_text_survives_the_outbox_json():
    reply = Reply(Text(Em(Text("a ", User("U1"))), Code("c"), Icon("x"), Channel("C1"), Link("https://e", "l"),
                       Status("warning"), User("U2", ping=False)),
                  lines=["plain <!channel>", Text(Em("b"))], fields=[("k", Text(User("U3")))],
                  footer=Text(Code("f")), more=Text(Link("https://p", "page")),
                  buttons=[Button("Go", "x.y", "1", confirm=Text("Sure ", User("U4"), "?"))])
    again = Reply.from_dict(reply.to_dict())
    assert render_blocks(again) == render_blocks(reply)
    assert again.users() == {"U1", "U2", "U3"}  # a button's confirm is not looked up
    assert from_json(to_json("plain")) == "plain"


def test_clip_cuts_at_a_word_and_keeps_pieces_whole():
    text = Text("word " * 50, User("U0RESPONDER"), " tail")
    clipped = clip(text, 40)
    assert len(clipped) <= 40 and str(clipped).endswith("…") and "wor…" not in clipped
    assert clip(Text("ab ", User("U0RESPONDER")), 8) == "ab …"
    assert clip("short", 10) == "short"


def _check_limits(reply: Reply) -> list[dict]:
    blocks = render_blocks(reply)
    assert len(blocks) <= MAX_BLOCKS
    assert message_size(blocks, fallback_text(reply)) <= MAX_CHARS
    for text in slack_texts(blocks):
        assert len(text) <= SECTION_CHARS
        # never cut inside a token, an emoji code or an entity
        assert text.count("<") == text.count(">")
        assert not re.search(r"&[a-z]{0,3}$|^[a-z]{0,3};", text)
    return blocks


def test_a_long_list_keeps_its_newest_lines_footer_and_says_how_many():
    lines = [Text(f"entry {i} ", User("U0RESPONDER"), " :white_check_mark: " + "x" * 3_990) for i in range(300)]
    reply = Reply("Timeline", lines=lines, footer="footer line", keep="end",
                  more=Text(Link("https://revops.example/incidents/1", "incident page")),
                  buttons=[Button("Ack", "incident.ack", "1")])
    blocks = _check_limits(reply)
    texts = slack_texts(blocks)
    assert any("entry 299 " in t for t in texts) and not any("entry 0 " in t for t in texts)
    note = next(t for t in texts if t.startswith("Showing the newest"))
    assert "of 300 lines — full list: <https://revops.example/incidents/1|incident page>" in note
    assert blocks[-1]["type"] == "context" and texts[-1] == "footer line"
    assert any(b["type"] == "actions" for b in blocks)


def test_one_enormous_line_is_split_at_words_never_inside_a_token():
    words = [f"word{i}" if i % 7 else f"<@U{i}>" for i in range(4000)]
    line = Text(*[p for i, w in enumerate(words) for p in ((User(f"U{i}") if w.startswith("<@") else w), " ")])
    blocks = _check_limits(Reply("Update", lines=[line, "last line"]))
    for text in slack_texts(blocks)[1:]:
        assert not re.search(r"<@U\d*$|^\d*>", text)
        assert not re.search(r"word\d*$", text) or text.endswith(tuple(f"word{i}" for i in range(4000)))


@hsettings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.text(min_size=0, max_size=400),
                          st.sampled_from(HOSTILE),
                          st.builds(User, st.from_regex(r"U[A-Z0-9]{3,8}", fullmatch=True)),
                          st.builds(Icon, st.sampled_from(["fire", "white_check_mark", "x"])),
                          st.builds(Code, st.text(max_size=300)),
                          st.builds(Link, st.just("https://e.example/p"), st.text(max_size=50))),
                max_size=60),
       st.integers(min_value=1, max_value=400))
@example(["*", Icon("fire"), "x*"], 1)  # a mark at the end of a string, the next piece right after it
@example(["a _", User("U123"), "_"], 2)
def test_any_reply_fits_slack_and_escapes_every_plain_string(parts, repeat):
    lines = [Text(*parts)] * (1 + repeat % 40)
    reply = Reply(Text(*parts[:5]), lines=lines, footer=Text(*parts[:3]), keep="end" if repeat % 2 else "start")
    blocks = _check_limits(reply)
    joined = "\n".join(slack_texts(blocks))
    for token in re.findall(r"<[^>]*>", joined):
        assert re.fullmatch(r"<@U[A-Z0-9]+>|<https://e\.example/p(\|[^>]*)?>|<!date\^00000000\^\{_\}\|[*_~`]>",
                            token), token
    # no formatting character of the data is left where Slack could read it as markup
    data = re.sub(r"`[^`\n]*`", "", re.sub(r"<[^>]*>", "", joined))
    assert not re.search(r"`|(?<![^\W_])[*_~](?=\S)", data), data


def test_formatting_characters_of_data_are_inert_and_words_stay_as_typed():
    blocks = render_blocks(Reply(Text("*bold* _it_ ~gone~ `code` ```block``` acct_1 2*3 ", Em("x_"), "\n> quote"),
                                 lines=["> not a quote either", "snake_case_name and __init__"]))
    texts = slack_texts(blocks)
    head = texts[0]
    for marker in "*_~`":
        assert f"<!date^00000000^{{_}}|{marker}>" in head
    assert "acct_1" in head and "2*3" in head  # inside a word: Slack formats nothing
    assert "*x_*" in head  # our own emphasis is still bold (a mark closing nothing stays as typed)
    assert "\n\u00ad&gt; quote" in head and texts[1].startswith("\u00ad&gt; not a quote")
    assert "snake_case_name" in texts[1]
    assert shown(head) == "*bold* _it_ ~gone~ `code` ```block``` acct_1 2*3 *x_*\n> quote"


def test_message_templates_treat_values_as_data(tmp_path):
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/t.db", "http://127.0.0.1:9/api/")
    view = {"number": 4, "stage": "checkout <!channel>", "summary": "*pay* `now` <https://evil.example|login>",
            "status": "open", "severity": "P3", "declared_by": "U0RESPONDER", "declared_at": "12:00",
            "ack": {"target": "30m"}, "resolve": {"target": "4h"}, "eta": "16:00", "impact": None}
    reply = render_reply(settings, "initial_p3.md", incident=view, link="https://revops.example/i/4")
    slack = "\n".join(slack_texts(render_blocks(reply)))
    assert "checkout &lt;!channel&gt;" in slack and "&lt;https://evil.example|login&gt;" in slack
    # the value's own marks are text, shown as typed and inert (Slack styles nothing of them)
    assert "*pay* `now`" not in slack and "*pay* `now`" in shown(slack)
    assert "<@U0RESPONDER>" in slack and "<https://revops.example/i/4|Incident page and timeline>" in slack
    console = render_text(reply, names={"U0RESPONDER": "Ada"})
    assert "checkout <!channel>" in console and "@Ada" in console and "<@" not in console


async def test_names_come_from_users_info_cached_and_fall_back_to_the_id(fake_slack):
    fake_slack.users["U0RESPONDER"] = "Ada Responder"
    client = AsyncWebClient(token="xoxb-test", base_url=fake_slack.api_url)
    names = Names(users_info_lookup(client))
    assert await names.resolve({"U0RESPONDER", "U0NOBODY"}) == {"U0RESPONDER": "Ada Responder"}
    assert await names.resolve({"U0RESPONDER"}) == {"U0RESPONDER": "Ada Responder"}
    assert fake_slack.attempts("users.info") == 2  # the second resolve was the cache's
    unreachable = Names(users_info_lookup(AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/")))
    assert await unreachable.resolve({"U0RESPONDER"}) == {}
    assert plain_text(Text(User("U0RESPONDER")), await unreachable.resolve({"U0RESPONDER"})) == "@U0RESPONDER"


def test_field_labels_are_emphasised_and_values_escaped():
    from bot.slack.blocks import fields_section
    assert fields_section([("Reason", "<!here> *x*")])["fields"][0]["text"] == (
        "*Reason*\n&lt;!here&gt; <!date^00000000^{_}|*>x*")


async def test_slack_posts_show_people_named_without_a_notification_by_name(fake_slack):
    from bot.slack.client import SlackSender
    fake_slack.users["U0RESPONDER"] = "Ada Responder"
    client = AsyncWebClient(token="xoxb-test", base_url=fake_slack.api_url)
    sender = SlackSender(client, Names(users_info_lookup(client)))
    await sender.post("C0INCIDENT", Reply(Text("Timeline: ", User("U0RESPONDER", ping=False), " noted; ",
                                               User("U0APPROVER"), " approved")), None)
    sent = fake_slack.calls_of("chat.postMessage")[-1].params
    assert "Timeline: @Ada Responder noted; <@U0APPROVER> approved" in str(sent["blocks"])
    assert [c.params["user"] for c in fake_slack.calls_of("users.info")] == ["U0RESPONDER"]  # only the quiet one


def test_buttons_of_one_action_get_unique_action_ids_and_still_route():
    from bot.registry import Registry, CommandSet
    from bot.roles import Role
    reply = Reply("Receivables", buttons=[Button(f"Remind {i}", "receivables.remind", f"in_{i}") for i in range(30)])
    ids = [e["action_id"] for b in render_blocks(reply) if b["type"] == "actions" for e in b["elements"]]
    assert len(ids) == 30 == len(set(ids)) and ids[:2] == ["revops:receivables.remind", "revops:receivables.remind~2"]
    registry = Registry()
    commands = CommandSet("receivables")

    @commands.action("remind", role=Role.viewer)
    async def remind(ctx, value):
        return Reply(value)

    registry.add(commands)
    assert registry.action(ids[1]).name == registry.action(ids[0]).name == "receivables.remind"
