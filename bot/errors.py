"""One exception tree for everything the bot reports to a person."""

from typing import Any

from .text import Code, Text


class RevopsError(Exception):
    """Base of every error the bot turns into a sentence for the person who asked.

    The message may be typed text (bot/text.py); `text` keeps it, `str(exc)` is its plain reading."""

    def __init__(self, message: Any = "", *args: Any):
        super().__init__(message, *args)
        self.text = message


class UsageError(RevopsError):
    """The request could not be parsed or an argument is wrong."""

    def __init__(self, message: str, usage: str | None = None):
        super().__init__(message)
        self.usage = usage


class PermissionDenied(RevopsError):
    """The person lacks the role the command needs."""

    def __init__(self, needed: str, actual: str, what: str):
        super().__init__(Text(Code(what), f" needs the {needed} role; you are {actual}."))
        self.needed = needed
        self.actual = actual


class NotFound(RevopsError):
    """A named thing (customer, event, incident) does not exist."""


class Conflict(RevopsError):
    """The action conflicts with current state (already decided, already open...)."""


class UpstreamError(RevopsError):
    """Stripe, Slack or the database failed; the message says so in words."""


class DatabaseUnavailable(UpstreamError):
    pass


class SettingsError(RevopsError):
    """A setting or the config file is invalid; one line names the key."""


def exception_chain(exc: BaseException | None, limit: int = 10) -> list[BaseException]:
    """`exc` and what caused it, outermost first (a driver's or a socket's error hides behind an
    adapter's): what the words for a failure are read from."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < limit:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain
