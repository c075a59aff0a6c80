"""Structured (JSON) logs with a request id, and no secret value ever written."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from datetime import datetime, timezone

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RedactSecrets(logging.Filter):
    """Replaces every configured secret value in a record with ***."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", None) or request_id.get(),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class OncePerSecond(logging.Filter):
    """The same message from the event loop's or uvicorn's logger at most once a second (an
    accept loop out of file descriptors says the same thing thousands of times a second); the
    next one that passes says how many were dropped."""

    LOGGERS = ("asyncio", "uvicorn.error", "uvicorn")

    def __init__(self, every: float = 1.0, clock=time.monotonic):
        super().__init__()
        self.every, self.clock = every, clock
        self.last: dict[tuple[str, str], float] = {}
        self.dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name not in self.LOGGERS:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        if now - self.last.get(key, -self.every) < self.every:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return False
        self.last[key] = now
        dropped = self.dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} more like it dropped in the last second)"
            record.args = None
        if len(self.last) > 1000:
            self.last.clear()
        return True


def setup_logging(settings, stream=None) -> None:
    secrets = [v.get_secret_value() for v in settings.env.secrets().values() if v is not None]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(OncePerSecond())
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_revops", False):
            root.removeHandler(old)
    handler._revops = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.env.revops_log_level.upper())
    for noisy in ("sqlalchemy.engine", "aiosqlite", "asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # uvicorn's loggers through this handler too (its tracebacks, its accept errors): no handlers
    # of their own (uvicorn runs with log_config=None), propagating to the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        for old in list(uv.handlers):
            uv.removeHandler(old)
        uv.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
