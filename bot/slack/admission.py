"""Admission of slash commands and clicks: Slack's 3 seconds hold however many arrive.

The decision is taken from two counters before any database work, as the request arrives:

* fewer than `[slack] queue_depth` in hand: it runs at once (a command answers inside its
  acknowledgement when it finishes within the budget, as always);
* from `queue_depth` up to `[slack] overload_limit` in hand: it is acknowledged at once ("Working
  on it…") and waits its turn; `queue_depth` router runs go at a time, and its answer follows on
  the response_url;
* past `overload_limit`: it is refused in words ("revops is overloaded, try again in a minute"),
  nothing of it ran and nothing was claimed, so the same request sent again runs;
* a delivery already in hand (the same signed request again, or the same trigger_id) is answered
  "already received" at once and takes no place; once it has run, the router's own replay rule
  (bot/deliveries.py) refuses it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")

log = logging.getLogger("revops.slack")

OVERLOADED = "revops is overloaded, try again in a minute. Nothing of this request was run."


class Verdict(Enum):
    RUN = "run"  # a turn is free: runs at once
    QUEUE = "queue"  # acknowledged at once, runs when a turn frees
    REFUSE = "refuse"  # over the hard bound: answered "overloaded", nothing run or claimed
    REPLAY = "replay"  # the same delivery is in hand already


class Admission:
    def __init__(self, queue_depth: int, overload_limit: int):
        self.queue_depth, self.overload_limit = queue_depth, max(overload_limit, queue_depth)
        self.in_hand = 0  # admitted and not finished: running, or waiting for a turn
        self.refused = 0  # since start (for the log and the tests)
        self._turns = asyncio.Semaphore(queue_depth)
        self._keys: set[str] = set()  # delivery keys of the requests in hand
        self._logged_at = float("-inf")
        self._unlogged = 0

    def admit(self, keys: tuple[str, ...]) -> Verdict:
        """Take a request (or not); synchronous, no I/O. A RUN or QUEUE verdict must be followed
        by `run` (which gives the place back)."""
        if any(key in self._keys for key in keys):
            return Verdict.REPLAY
        if self.in_hand >= self.overload_limit:
            self.refused += 1
            self._log_refusal()
            return Verdict.REFUSE
        verdict = Verdict.RUN if self.in_hand < self.queue_depth else Verdict.QUEUE
        self.in_hand += 1
        self._keys.update(keys)
        return verdict

    def start(self, keys: tuple[str, ...], work: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Run an admitted request's router work in its turn (a task)."""
        return asyncio.ensure_future(self.run(keys, work))

    async def run(self, keys: tuple[str, ...], work: Callable[[], Awaitable[T]]) -> T:
        try:
            async with self._turns:
                return await work()
        finally:
            self.in_hand -= 1
            self._keys.difference_update(keys)

    def _log_refusal(self) -> None:
        """A warning at most once a second under overload, with how many were refused meanwhile."""
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            log.warning("overloaded: %d request(s) refused as overloaded (%d in hand, limit %d)",
                        self._unlogged, self.in_hand, self.overload_limit)
            self._logged_at, self._unlogged = now, 0
