"""Capture every log record the process writes (any logger, DEBUG and up) while a test runs."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def root_records(render: Callable[[logging.LogRecord], str],
                 filters: tuple[logging.Filter, ...] = ()) -> Iterator[list[str]]:
    """The lines `render` makes of each record (after `filters`), in order, while the block runs."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(render(record))

    handler = Collect(level=logging.DEBUG)
    for one in filters:
        handler.addFilter(one)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
