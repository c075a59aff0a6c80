"""The bolt AsyncApp: listeners are a few lines — acknowledge, call the router, render."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Mapping

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler, AsyncServerErrorRetryHandler
from slack_sdk.webhook.async_client import AsyncWebhookClient
from sqlalchemy.exc import IntegrityError

from ..deliveries import delivery_keys, pause
from ..errors import UsageError
from ..models import SlackDelivery
from ..reply import Reply
from ..router import ALREADY_RECEIVED, Outcome, Router
from ..services import Services
from .admission import OVERLOADED, Admission, Verdict
from .blocks import fallback_text, render_blocks
from .client import classify
from . import home, reactions
from .modals import register as register_modals

log = logging.getLogger("revops.slack")
# The webhook client logs each request's URL at DEBUG; a response_url carries a token: never below INFO.
webhook_log = logging.getLogger("revops.slack.response_url")
webhook_log.setLevel(logging.INFO)

# Answer inside the acknowledgement when the work finishes this fast; Slack allows 3 s.
ACK_BUDGET = 2.0
WORKING = "Working on it…"


def payload(reply: Reply, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "text": fallback_text(reply, names),
        "blocks": render_blocks(reply, names),
        "response_type": "ephemeral" if reply.private else "in_channel",
    }


class Followups:
    """Work that goes on after Slack has its acknowledgement (slow answers, click results).

    bolt runs listeners with `process_before_response=True`: the HTTP response (or Socket
    Mode ack) goes out when the listener returns, so a quick answer is in it at once rather
    than after bolt's 10 ms acknowledgement poll. Whatever must outlive the acknowledgement
    is handed here; the runtime drains it before it stops."""

    def __init__(self):
        self.tasks: set[asyncio.Task] = set()

    def start(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("follow-up after acknowledgement failed: %s", type(task.exception()).__name__,
                      exc_info=task.exception())

    async def drain(self, timeout: float = 15.0) -> None:
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)


async def answer(client, body: dict, message: dict[str, Any], *, user: str | None, channel: str | None) -> None:
    """Answer through the request's response_url; when that fails (404 `expired_url` — it lives
    30 minutes and takes 5 answers —, a 5xx after two retries, the network), as an ephemeral
    message to the person in the channel instead: no answer is lost, and the failure is logged
    with its status (never the URL, which carries a token)."""
    url = body.get("response_url")
    failure = "no response_url"
    if url:
        webhook = AsyncWebhookClient(url, timeout=10, logger=webhook_log, retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2), AsyncServerErrorRetryHandler(max_retry_count=2)])
        try:
            response = await webhook.send_dict(message)
            if response.status_code == 200:
                return
            failure = f"HTTP {response.status_code} {''.join(ch for ch in str(response.body)[:40] if ch.isalnum() or ch in '_-')}"
        except Exception as exc:
            failure = f"{type(exc).__name__} (network)"
    if user and not channel:
        # A click on the App Home tab carries neither a response_url nor a channel: the answer goes
        # to the person's messages with the app (a DM), so a refusal still reaches them.
        if url:
            log.warning("response_url failed (%s) and there is no channel: answering by DM instead", failure)
        try:
            await client.chat_postMessage(channel=user, text=message.get("text") or "", blocks=message.get("blocks"))
        except Exception as exc:
            log.warning("the answer by DM failed (%s); the answer is lost", classify(exc))
        return
    if not user or not channel:
        log.warning("response_url failed (%s) and there is no user and channel to answer instead", failure)
        return
    log.warning("response_url failed (%s); answering with chat.postEphemeral instead", failure)
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=message.get("text") or "",
                                        blocks=message.get("blocks"))
    except Exception as exc:
        log.warning("the chat.postEphemeral fallback failed too (%s); the answer is lost", classify(exc))


def delivery_of(request, body) -> tuple[str, ...]:
    """What the router claims a slash command or click under (a replay inside the signature
    window finds it claimed): its signature and timestamp, and its trigger_id. Socket Mode
    carries no signature; its trigger_id still says."""
    headers = getattr(request, "headers", None) or {}

    def header(name: str) -> str | None:
        values = headers.get(name) or [None]
        return values[0] if isinstance(values, (list, tuple)) else values

    trigger = body.get("trigger_id") if isinstance(body, dict) else None
    return delivery_keys(header("x-slack-request-timestamp"), header("x-slack-signature"), trigger)


def build_slack_app(services: Services, router: Router, client, followups: Followups | None = None) -> AsyncApp:
    env = services.settings.env
    followups = followups or Followups()
    app = AsyncApp(
        signing_secret=env.slack_signing_secret.get_secret_value(),
        client=client,
        process_before_response=True,
    )
    app.revops_followups = followups  # type: ignore[attr-defined]
    names = services.extras.get("names")  # bot/names.py: people shown without a notification, by name

    def names_known(reply: Reply) -> dict[str, str]:
        return names.known(reply.users(quiet_only=True)) if names is not None else {}

    async def names_for(reply: Reply) -> dict[str, str]:
        return await names.resolve(reply.users(quiet_only=True)) if names is not None else {}

    @app.middleware
    async def drop_retried_events(body, next):
        # Slack redelivers events it thinks we missed (X-Slack-Retry-Num); do each once.
        event_id = body.get("event_id") if isinstance(body, dict) else None
        if event_id:
            try:
                async with services.db.transaction() as session:
                    session.add(SlackDelivery(event_id=event_id, received_at=services.clock.now()))
            except IntegrityError:
                log.info("duplicate delivery of event %s ignored", event_id)
                return BoltResponse(status=200, body="")
        return await next()

    admission = Admission(services.settings.cfg.slack.queue_depth, services.settings.cfg.slack.overload_limit)
    app.revops_admission = admission  # type: ignore[attr-defined]

    @app.command("/revops")
    async def on_command(ack, body, client, request):
        # Admitted (or not) before anything else: Slack's 3 seconds hold however many arrive.
        delivery = delivery_of(request, body)
        verdict = admission.admit(delivery)
        if verdict is Verdict.REPLAY:
            await ack(text=ALREADY_RECEIVED, response_type="ephemeral")
            return
        if verdict is Verdict.REFUSE:
            await ack(text=OVERLOADED, response_type="ephemeral")
            return
        text = body.get("text", "")
        parsed = router.parse(text)  # once: it says whether the command is slow, and the router runs it
        work = admission.start(delivery, lambda: router.handle_text(
            text, actor=body["user_id"], channel=body.get("channel_id"), surface="slack", parsed=parsed,
            delivery=delivery,
        ))
        slow = not isinstance(parsed, UsageError) and parsed[0].slow
        budget = 0 if slow or verdict is Verdict.QUEUE else ACK_BUDGET
        done, _ = await asyncio.wait({work}, timeout=budget) if budget else (set(), None)
        if done:
            reply = work.result().reply
            await ack(**payload(reply, names_known(reply)))  # no lookup on the acknowledgement's clock
            return
        await ack(text=WORKING, response_type="ephemeral")

        async def answer_later():
            outcome: Outcome = await work
            await answer(client, body, {**payload(outcome.reply, await names_for(outcome.reply)),
                                        "replace_original": False},
                         user=body.get("user_id"), channel=body.get("channel_id"))

        followups.start(answer_later())

    @app.action(re.compile(r"^revops:(?!form:)"))  # (a revops:form: button opens a form: bot/slack/modals.py)
    async def on_click(ack, body, action, client, request):
        delivery = delivery_of(request, body)
        verdict = admission.admit(delivery)  # before the acknowledgement, and before any database work
        await ack()
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        user = (body.get("user") or {}).get("id") or ""
        if verdict in (Verdict.REPLAY, Verdict.REFUSE):
            words = OVERLOADED if verdict is Verdict.REFUSE else ALREADY_RECEIVED
            followups.start(answer(client, body, {"text": words, "response_type": "ephemeral",
                                                  "replace_original": False}, user=user, channel=channel))
            return
        work = admission.start(delivery, lambda: router.handle_click(
            action["action_id"], action.get("value", ""), actor=user, channel=channel, surface="slack",
            delivery=delivery,
        ))

        async def click():
            outcome = await work
            reply = outcome.reply
            names = await names_for(reply)
            message = {"text": fallback_text(reply, names), "blocks": render_blocks(reply, names)}
            if getattr(reply, "replace", False):
                message["replace_original"] = True
            else:
                message.update(response_type="ephemeral", replace_original=False)
            await answer(client, body, message, user=user, channel=channel)

        followups.start(click())

    async def paused(reason: str) -> None:
        now = services.clock.now()
        async with services.db.transaction() as session:
            await pause(session, f"{reason} at {now:%Y-%m-%d %H:%M} UTC", now)

    @app.event("app_uninstalled")
    async def on_uninstalled(event):
        # The token is dead: the outbox keeps its posts, untried, until a Slack call works again.
        await paused("the app was uninstalled")

    @app.event("tokens_revoked")
    async def on_tokens_revoked(event):
        tokens = event.get("tokens") or {}
        if tokens.get("bot") or not tokens:  # (the bot uses no user tokens: those alone change nothing)
            await paused("the bot token was revoked")

    @app.event("app_mention")
    async def on_mention(event, client):
        # bolt acknowledges events itself; the answer follows.
        followups.start(mention(event, client))

    async def mention(event, client):
        # "@revops help" runs the same commands; the answer goes to the thread.
        text = re.sub(r"^\s*<@[A-Z0-9]+>\s*", "", event.get("text", ""))
        outcome = await router.handle_text(text, actor=event.get("user", ""), channel=event.get("channel"),
                                           surface="slack")
        reply = outcome.reply
        thread = event.get("thread_ts") or event.get("ts")
        names = await names_for(reply)
        if reply.private:
            await client.chat_postEphemeral(channel=event["channel"], user=event["user"],
                                            text=fallback_text(reply, names), blocks=render_blocks(reply, names),
                                            thread_ts=thread)
        else:
            await client.chat_postMessage(channel=event["channel"], text=fallback_text(reply, names),
                                          blocks=render_blocks(reply, names), thread_ts=thread)

    reactions.register(app, services, router, followups, client)  # 📌 to the timeline
    home.register(app, services, router, followups, client)  # the App Home tab (bot/slack/home.py)
    register_modals(app, services, router, followups, client)
    return app
