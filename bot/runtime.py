"""Everything one process needs, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from .clock import Clock
from .family import Families
from .names import Names
from .outbox import Deliverer, Sender
from .router import Router
from .services import Services
from .settings import Settings
from .slack.app import Followups, build_slack_app
from .slack.home import attach as attach_home
from .slack.client import SlackSender, make_web_client
from .slack.names import users_info_lookup
from .templating import check_templates
from .worker import Worker

log = logging.getLogger("revops.runtime")


class Runtime:
    """The families' services, the router, the outbox's deliverer, the Slack app and (optionally)
    the worker of one process. `families` comes from the composition root (bot/app.py)."""

    def __init__(self, settings: Settings, families: Families, clock: Clock | None = None,
                 sender: Sender | None = None, with_worker: bool = False, delivers: bool = True):
        self.settings = settings
        self.families = families
        self.services: Services = families.build_services(settings, clock)
        self.router = Router(self.services)
        self.web_client = None
        self.slack_app = None
        self.slack_handler = None
        if settings.env.slack_bot_token is not None:
            self.web_client = make_web_client(settings)
        # Display names where Slack does not show them (console, pages, people a post names without
        # notifying them): users.info when there is a token.
        self.names = Names(users_info_lookup(self.web_client) if self.web_client is not None else None)
        self.services.extras["names"] = self.names
        if sender is None and self.web_client is not None:
            # the outbox's own client leaves 429s to the outbox: a 429 sleeps only its channel
            sender = SlackSender(make_web_client(settings, rate_limit_retries=0), self.names)
        self.deliverer = Deliverer(self.services.db, self.services.clock, sender,
                                   interval=settings.env.revops_post_interval.total_seconds(),
                                   on_failure=self.services.delivery_failed)
        self.services.on_posts.append(self.deliverer.kick)
        self.with_worker = with_worker
        self.delivers = delivers  # whether this process's outbox task delivers (a worker always does)
        self.worker: Worker | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def slack_configured(self) -> bool:
        env = self.settings.env
        return env.slack_bot_token is not None and env.slack_signing_secret is not None

    def refresh_homes(self) -> Followups | None:
        """In a process without the Slack app (`revops worker`): publish the App Homes again when
        its jobs change what they show (a request expiring). The refreshes run as the returned
        follow-ups, which the caller drains before it stops; None without a Slack token."""
        if self.web_client is None:
            return None
        followups = Followups()
        attach_home(self.services, self.web_client, followups)
        return followups

    def build_slack(self) -> None:
        if not self.slack_configured:
            return
        self.slack_app = build_slack_app(self.services, self.router, self.web_client)
        self.slack_handler = AsyncSlackRequestHandler(self.slack_app)

    async def start(self) -> None:
        # A template that fails to render stops start-up, naming it.
        check_templates(self.settings, self.services.template_samples(self.settings))
        await self.services.db.upgrade()
        await self.services.db.warm()  # (PostgreSQL: the first burst of commands waits on no connect)
        self.build_slack()
        if self.delivers and not self.with_worker:  # (the worker runs the outbox loop itself)
            self._tasks.append(asyncio.create_task(self.deliverer.run(), name="outbox"))
        if self.with_worker:
            self.worker = Worker(self.services, self.deliverer)
            self._tasks.append(asyncio.create_task(self.worker.run_forever(), name="worker"))
        if self.settings.env.slack_app_token is not None and self.slack_app is not None:
            self._tasks.append(asyncio.create_task(self._socket_mode(), name="socket-mode"))
        # Everything loaded so far (libraries, models, the app) lives as long as the process: keep
        # it out of the cyclic collector's full passes, which otherwise stall requests for tens of ms.
        gc.collect()
        gc.freeze()

    async def _socket_mode(self) -> None:
        """Connect over Socket Mode, retrying with back-off while Slack is unreachable."""
        handler = AsyncSocketModeHandler(self.slack_app, self.settings.env.slack_app_token.get_secret_value())
        self._socket_handler = handler
        delay = 1.0
        while True:
            try:
                await handler.connect_async()
                log.info("Socket Mode connected")
                return
            except Exception as exc:
                log.warning("Socket Mode connection failed (%s); retrying in %.0fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)

    async def stop(self) -> None:
        if self.slack_app is not None:  # answers still owed to people who were acknowledged
            await self.slack_app.revops_followups.drain()
        grace = self.settings.env.revops_shutdown_grace.total_seconds()
        if self.worker is not None:
            self.worker.stop()
        # No new claims; the sends in flight finish (within the grace), then every claim is released.
        await self.deliverer.stop(grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.deliverer.release_claims()
        handler = getattr(self, "_socket_handler", None)
        if handler is not None:
            with contextlib.suppress(Exception):
                await handler.close_async()
        await self.services.db.dispose()
