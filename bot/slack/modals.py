"""Modals: a command typed with arguments missing opens its form (bot/forms.py) instead of the
usage line; a `revops:form:<command words>` button opens the same form (its value prefills it).

- `/revops grant` (no arguments): the acknowledgement is empty and `views.open` is called at once
  with the slash command's trigger_id (it lives 3 s); what a prefilled value names (the account,
  the invoice) is looked up afterwards and shown with `views.update`.
- `view_submission`: the fields make the command's text (forms.command_text); the registry's
  grammar parses it — a bad value is answered with `response_action: errors` on its field, in
  words; a valid one runs through the router exactly like the typed command (roles, dry-run,
  panic, audit, timeline), as the person, in the channel the form was opened from. A refusal of the
  command's own checks (no such account, over the daily cap) comes back on the field too when
  it is known within the acknowledgement's budget; any other answer is posted to the channel
  (ephemeral to the person when it is private, as a typed command's would be).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from slack_bolt.response import BoltResponse

from .. import forms
from ..deliveries import delivery_keys
from ..errors import UsageError
from ..reply import Reply
from ..router import Outcome
from ..text import Code, Text, User
from .admission import OVERLOADED, Verdict
from .blocks import context, fallback_text, mrkdwn, plain, render_blocks
from .client import classify

log = logging.getLogger("revops.slack.modals")

CALLBACK = "revops:form"
FORM_BUTTON = re.compile(r"^revops:form:(.+?)(?:~\d+)?$")  # (a second copy of a button in one message: ~2)
ACK_BUDGET = 2.0  # a submission's answer waits this long for the command (Slack allows 3 s)
LOOKING_UP = "Looking it up…"
TITLE_CHARS, SUBMIT_CHARS, META_CHARS = 24, 24, 3000


def modal_view(command, values: dict[str, str], channel: str | None, notes: dict[str, Any] | None = None,
               names=None) -> dict[str, Any]:
    """The form as a Block Kit modal: one input block per field (block_id and action_id = the
    field's name, so a views.update keeps what the person typed), a context line under a field
    saying what its value names, and the channel and command in private_metadata."""
    form = command.form
    blocks: list[dict[str, Any]] = []
    if form.intro:
        blocks.append({"type": "context", "elements": [plain(form.intro, 2000)]})
    for f in form.fields:
        blocks.append(_input(command, f, values.get(f.name)))
        note = (notes or {}).get(f.name)
        if note:
            blocks.append({**context(mrkdwn(note, names)), "block_id": f"{f.name}.note"})
    blocks.append({"type": "context", "elements": [plain(f"Same as /revops {command.usage}", 2000)]})
    metadata = json.dumps({"command": command.name, "channel": channel})
    return {
        "type": "modal",
        "callback_id": CALLBACK,
        "title": plain(form.title, TITLE_CHARS),
        "submit": plain(form.submit, SUBMIT_CHARS),
        "close": plain("Cancel", SUBMIT_CHARS),
        "private_metadata": metadata[:META_CHARS],
        "blocks": blocks,
    }


def _input(command, f: forms.Field, value: str | None) -> dict[str, Any]:
    if f.kind == "select":
        options = [{"text": plain(o, 75), "value": o[:150]} for o in f.options]
        element: dict[str, Any] = {"type": "static_select", "action_id": f.name, "options": options,
                                   "placeholder": plain("Choose", 150)}
        chosen = [o for o in options if value and o["value"].lower() == value.lower()]
        if chosen:
            element["initial_option"] = chosen[0]
    else:
        element = {"type": "plain_text_input", "action_id": f.name, "multiline": f.kind == "multiline",
                   "max_length": forms.max_length(command, f)}
        if value:
            element["initial_value"] = value[: element["max_length"]]
    block = {"type": "input", "block_id": f.name, "optional": f.optional, "label": plain(f.label, 2000),
             "element": element}
    if f.show is not None and f.kind != "select":  # Enter looks up what it names (on_field)
        block["dispatch_action"] = True
        element["dispatch_action_config"] = {"trigger_actions_on": ["on_enter_pressed"]}
    if f.hint:
        block["hint"] = plain(f.hint, 2000)
    return block


def submitted_values(view: dict[str, Any]) -> dict[str, str]:
    """What was filled in, by field (a select's chosen value, a text's text)."""
    values: dict[str, str] = {}
    state = ((view or {}).get("state") or {}).get("values") or {}
    for block_id, elements in state.items():
        if not isinstance(elements, dict):
            continue
        for element in elements.values():
            if not isinstance(element, dict):
                continue
            if element.get("type") == "static_select":
                value = (element.get("selected_option") or {}).get("value")
            else:
                value = element.get("value")
            if isinstance(value, str):
                values[block_id] = value
    return values


def register(app, services, router, followups, client) -> None:
    registry = services.registry
    names = services.extras.get("names")

    async def names_for(reply: Reply) -> dict[str, str]:
        return await names.resolve(reply.users(quiet_only=True)) if names is not None else {}

    async def say(reply: Reply, *, user: str, channel: str | None) -> None:
        """An answer to the person: in the channel (ephemeral when private), else by DM; by DM
        when the channel refuses it (the bot is not in it)."""
        shown = await names_for(reply)
        message = {"text": fallback_text(reply, shown), "blocks": render_blocks(reply, shown)}
        try:
            if channel and reply.private:
                await client.chat_postEphemeral(channel=channel, user=user, **message)
            else:
                await client.chat_postMessage(channel=channel or user, **message)
            return
        except Exception as exc:
            log.warning("a form's answer was refused in its channel (%s); sending it by DM", classify(exc))
        try:
            await client.chat_postMessage(channel=user, **message)
        except Exception as exc:
            log.warning("a form's answer could not be sent by DM either (%s); it is lost", classify(exc))

    async def open_form(command, values: dict[str, str], *, trigger_id: str, user: str, channel: str | None,
                        typed: str) -> None:
        """views.open at once with what is known; then what the prefilled values name, by views.update."""
        shows = [f for f in command.form.fields if f.show is not None and values.get(f.name)]
        try:
            opened = await client.views_open(trigger_id=trigger_id, view=modal_view(
                command, values, channel, {f.name: LOOKING_UP for f in shows}))
        except Exception as exc:
            log.warning("views.open failed for %s (%s); answering with the usage line", command.name, classify(exc))
            outcome = await router.handle_text(typed, actor=user, channel=channel, surface="slack")
            await say(outcome.reply, user=user, channel=channel)
            return
        await refresh(command, values, channel, opened.get("view") or {})

    async def refresh(command, values: dict[str, str], channel: str | None, view: dict[str, Any]) -> None:
        """What the filled-in values name, looked up and shown under their fields (views.update)."""
        shows = [f for f in command.form.fields if f.show is not None and values.get(f.name)]
        if not shows:
            return
        notes: dict[str, Any] = {}
        for f in shows:
            try:
                notes[f.name] = await f.show(services, values[f.name]) or " "
            except Exception as exc:
                log.warning("looking up a form's %s failed (%s)", f.name, type(exc).__name__)
                notes[f.name] = "Could not look it up just now; it is checked when you submit."
        shown = await names.resolve(set().union(*(Reply(n).users(quiet_only=True) for n in notes.values()))) \
            if names is not None else {}
        try:
            await client.views_update(view_id=view.get("id"), hash=view.get("hash"),
                                      view=modal_view(command, values, channel, notes, shown))
        except Exception as exc:
            log.info("views.update of a form failed (%s); it stays as it was", classify(exc))

    @app.middleware
    async def slash_forms(body, next):
        """A `/revops` slash command naming a form's command with arguments missing: the form."""
        if isinstance(body, dict) and body.get("command") == "/revops" and body.get("trigger_id") \
                and "type" not in body:
            found = forms.wanted(registry, str(body.get("text") or ""))
            if found is not None:
                command, values = found
                followups.start(open_form(command, values, trigger_id=body["trigger_id"], user=body.get("user_id", ""),
                                          channel=body.get("channel_id"), typed=str(body.get("text") or "")))
                return BoltResponse(status=200, body="")  # the acknowledgement: no message, the form opens
        return await next()

    @app.action(FORM_BUTTON)
    async def on_form_button(ack, body, action):
        await ack()
        words = FORM_BUTTON.match(action.get("action_id", "")).group(1)
        command = forms.command_named(registry, words)
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if command is None or command.form is None or not body.get("trigger_id"):
            followups.start(say(Reply(Text("This button (", Code(words[:60]), ") no longer opens a form.")),
                                user=user, channel=channel))
            return
        values = forms.prefill(command, str(action.get("value") or ""))
        followups.start(open_form(command, values, trigger_id=body["trigger_id"], user=user, channel=channel,
                                  typed=command.name))

    async def in_a_form(body) -> bool:
        return isinstance(body.get("view"), dict) and body["view"].get("callback_id") == CALLBACK

    @app.action(re.compile(r"^[a-z_]+$"), matchers=[in_a_form])
    async def on_field(ack, body, action):
        """Enter pressed in a field that names something (the account): look it up and show it."""
        await ack()
        view = body["view"]
        command = forms.command_named(registry, str(_metadata(view).get("command") or ""))
        if command is None or command.form is None:
            return
        values = submitted_values(view)
        if isinstance(action.get("value"), str):
            values[action["action_id"]] = action["value"]
        followups.start(refresh(command, values, _metadata(view).get("channel"), view))

    @app.view(CALLBACK)
    async def on_submit(ack, body, view, request):
        user = body["user"]["id"]
        meta = _metadata(view)
        channel = meta.get("channel")
        command = forms.command_named(registry, str(meta.get("command") or ""))
        if command is None or command.form is None:
            await ack()
            followups.start(say(Reply("This form is no longer handled; type the command instead."),
                                user=user, channel=channel))
            return
        values = submitted_values(view)
        problems = forms.field_problems(command, values)
        if problems:
            await ack(response_action="errors", errors=problems)
            return
        text = forms.command_text(command, values)
        parsed = router.parse(text)
        if isinstance(parsed, UsageError):
            await ack(response_action="errors", errors=_errors(command, values, parsed))
            return
        if parsed[0] is not command:  # a value that reads as a sub-command word (`grant approve …`)
            first = next(f for f in command.form.fields if f.name not in command.grammar.named)
            await ack(response_action="errors", errors={
                first.name: f"“{values.get(first.name, '')[:40]}” reads as the sub-command "
                            f"/revops {parsed[0].name}; write it another way"})
            return
        delivery = _delivery(request, body)
        admission = getattr(app, "revops_admission", None)  # bot/slack/admission.py, as for a typed command
        verdict = admission.admit(delivery) if admission is not None else Verdict.RUN
        if verdict is Verdict.REFUSE:
            await ack(response_action="errors", errors={command.form.fields[0].name: OVERLOADED})
            return
        if verdict is Verdict.REPLAY:
            await ack()
            return

        def run():
            return router.handle_text(text, actor=user, channel=channel, surface="slack", parsed=parsed,
                                      delivery=delivery)

        work = admission.start(delivery, run) if admission is not None else asyncio.ensure_future(run())
        if not command.slow:  # (a slow one is answered afterwards, as when typed)
            await asyncio.wait({work}, timeout=ACK_BUDGET)
        if work.done() and not work.cancelled() and work.exception() is None and work.result().outcome == "usage":
            await ack(response_action="errors", errors=_errors(command, values, work.result().reply))
            return
        await ack()  # the modal closes; the answer follows in the channel

        async def answer() -> None:
            outcome: Outcome = await work
            reply = outcome.reply
            if not reply.private and reply.footer is None:
                reply.footer = Text("Sent by ", User(user, ping=False), " with the ", Code(f"/revops {command.name}"),
                                    " form")
            await say(reply, user=user, channel=channel)

        followups.start(answer())


def _metadata(view: dict[str, Any]) -> dict[str, Any]:
    """The channel and command a form was opened for (its private_metadata)."""
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    if not isinstance(meta, dict):
        return {}
    return {"command": meta.get("command") if isinstance(meta.get("command"), str) else None,
            "channel": meta.get("channel") if isinstance(meta.get("channel"), str) else None}


def _errors(command, values: dict[str, str], refusal: UsageError | Reply) -> dict[str, str]:
    """`response_action: errors` for a refusal: on the field it is about, in words."""
    message = " ".join(str(refusal.text).split())
    field = forms.field_of(command, values, message)
    return {field: forms.reason_for(command, field, message)[:300]}


def _delivery(request, body) -> tuple[str, ...]:
    """What the router claims the submission under (a replay of it finds it claimed), as for a
    slash command (bot/slack/app.py delivery_of)."""
    headers = getattr(request, "headers", None) or {}

    def header(name: str) -> str | None:
        values = headers.get(name) or [None]
        return values[0] if isinstance(values, (list, tuple)) else values

    trigger = body.get("trigger_id") if isinstance(body, dict) else None
    return delivery_keys(header("x-slack-request-timestamp"), header("x-slack-signature"), trigger)
