"""Display names for Slack user ids, for the surfaces where Slack does not turn `<@U…>` into a
name (the console, HTML pages, CSV). Looked up through a `lookup` the Slack adapter supplies
(`users.info`), cached; the id stands in whenever Slack cannot say (no token, unreachable, slow).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Iterable

log = logging.getLogger("revops.names")

Lookup = Callable[[str], Awaitable["str | None"]]

KEEP_FOR = 3600.0  # seconds a name is trusted
KEEP_MISSES_FOR = 60.0  # seconds before asking again about an id Slack could not name
BUDGET = 2.0  # seconds a render waits for names before showing ids
AT_ONCE = 8  # lookups in flight


class Names:
    def __init__(self, lookup: Lookup | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.lookup = lookup
        self.clock = clock
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._gate = asyncio.Semaphore(AT_ONCE)

    def get(self, user_id: str) -> str | None:
        """The cached name, or None (never waits)."""
        entry = self._cache.get(user_id)
        if entry is None or entry[1] < self.clock():
            return None
        return entry[0]

    def known(self, ids: Iterable[str]) -> dict[str, str]:
        return {i: name for i in ids if (name := self.get(i))}

    async def resolve(self, ids: Iterable[str]) -> dict[str, str]:
        """Names for `ids`, looking up the ones not cached (within BUDGET); ids without one are left out."""
        wanted = {i for i in ids if i}
        missing = [i for i in wanted if self._cache.get(i, (None, -1.0))[1] < self.clock()]
        if missing and self.lookup is not None:
            tasks = [asyncio.ensure_future(self._fetch(i)) for i in missing]
            done, pending = await asyncio.wait(tasks, timeout=BUDGET)
            for task in pending:
                task.cancel()
            if pending:
                log.info("names: %d lookups did not answer within %.0f s; showing ids", len(pending), BUDGET)
        return self.known(wanted)

    async def _fetch(self, user_id: str) -> None:
        async with self._gate:
            try:
                name = await self.lookup(user_id)
            except Exception as exc:  # Slack unreachable or refusing: the id stands in
                log.info("names: users.info for %s failed (%s)", user_id, type(exc).__name__)
                name = None
        keep = KEEP_FOR if name else KEEP_MISSES_FOR
        self._cache[user_id] = (name, self.clock() + keep)
