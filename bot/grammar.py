"""The argument grammar of a sub-command, written as its usage line.

    "grant <account> <amount:int> <reason...>"
    "audit [target] [--since DURATION]"
    "impact [baseline=NUM] [current=NUM]"

`<x>` is required, `[x]` optional, `...` takes the rest of the line, `:int`
`:signed` and `:duration` convert, `a|b|c` is a choice, `--name TYPE` is an
option anywhere on the line, `key=VALUE` a named value.

What a person types is checked here, before any command sees it: numbers are ASCII digits
(`٣` or `３` are not numbers), a duration is at most `MAX_WINDOW`, control characters other
than newline and tab are refused, one argument is at most `MAX_WORD` characters and the text
of a `...` argument at most `MAX_TEXT` (stored whole).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .durations import format_duration, parse_duration
from .errors import UsageError
from .text import Code, Text

MAX_WINDOW = timedelta(days=90)  # the longest `--since` (or any duration) a command takes
MAX_TEXT = 1000  # characters in a reason, summary, note... (the rest of the line)
MAX_WORD = 100  # characters in one argument (an account, an id, a stage)
MAX_LINE = 4000  # characters in a whole command line
# C0 controls, DEL and C1 controls, except tab and newline: NUL breaks PostgreSQL text, the rest
# is invisible in Slack and in the audit log.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_TOKEN = re.compile(r"(<[^>]+>|\[[^\]]+\]|\S+)")


@dataclass
class Param:
    name: str
    kind: str = "str"  # str | int | signed | duration | choice
    required: bool = True
    rest: bool = False
    choices: tuple[str, ...] = ()


@dataclass
class Grammar:
    path: tuple[str, ...]
    usage: str
    params: list[Param] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # --name -> kind
    named: dict[str, str] = field(default_factory=dict)  # key= -> kind

    @classmethod
    def from_usage(cls, usage: str) -> "Grammar":
        path: list[str] = []
        params: list[Param] = []
        options: dict[str, str] = {}
        named: dict[str, str] = {}
        for token in _TOKEN.findall(usage):
            optional = token.startswith("[")
            inner = token[1:-1].strip() if token[0] in "<[" else token
            if token[0] not in "<[" and not params and "|" not in token:
                path.append(token)
                continue
            if inner.startswith("--"):
                name, _, kind = inner.partition(" ")
                options[name[2:]] = _kind_of(kind.strip())
                continue
            if "=" in inner:
                name, _, kind = inner.partition("=")
                named[name] = _kind_of(kind)
                continue
            rest = inner.endswith("...") or inner.endswith("…")
            inner = inner.rstrip(".…")
            name, _, kind = inner.partition(":")
            if "|" in name:
                choices = tuple(name.split("|"))
                params.append(Param(name=kind or "choice", kind="choice", required=not optional, choices=choices))
                continue
            params.append(Param(name=name, kind=kind or "str", required=not optional, rest=rest))
        shown = re.sub(r"<([^>:]+):(?:int|signed|duration)>", r"<\1>", usage)  # types are for the parser
        return cls(tuple(path), shown, params, options, named)

    def parse(self, tokens: list[str]) -> dict[str, Any]:
        """Turn the tokens after the command path into typed arguments."""
        args: dict[str, Any] = {}
        positional: list[str] = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok.startswith("--") and len(tok) > 2:
                name, eq, value = tok[2:].partition("=")
                if name not in self.options:
                    raise UsageError(Text("unknown option ", Code(f"--{name}")))
                if not eq:
                    if i + 1 >= len(tokens):
                        raise UsageError(Text(Code(f"--{name}"), " needs a value"))
                    value = tokens[i + 1]
                    i += 1
                _short(f"--{name}", value)
                args[name.replace("-", "_")] = _convert(f"--{name}", self.options[name], value)
            elif self.named and "=" in tok and tok.split("=", 1)[0] in self.named:
                key, _, value = tok.partition("=")
                if not value:
                    raise UsageError(Text(Code(f"{key}="), " needs a value"))
                _short(f"{key}=", value)
                args[key] = _convert(key, self.named[key], value)
            else:
                positional.append(tok)
            i += 1
        for param in self.params:
            if param.rest:
                if positional:
                    text = " ".join(positional)
                    if len(text) > MAX_TEXT:
                        raise UsageError(f"<{param.name}> is too long: {len(text):,} characters, at most {MAX_TEXT:,}")
                    args[param.name] = text
                    positional = []
                elif param.required:
                    raise UsageError(f"missing <{param.name}>")
                continue
            if not positional:
                if param.required:
                    raise UsageError(f"missing <{param.name}>")
                continue
            raw = positional.pop(0)
            _short(f"<{param.name}>", raw)
            if param.kind == "choice":
                match = [c for c in param.choices if c.lower() == raw.lower()]
                if not match:
                    raise UsageError(Text(f"expected one of {', '.join(param.choices)}, got ", Code(_clip(raw))))
                args[param.name] = match[0]
            else:
                args[param.name] = _convert(f"<{param.name}>", param.kind, raw)
        if positional:
            raise UsageError(Text("unexpected argument ", Code(_clip(positional[0]))))
        return args


def _short(label: str, raw: str) -> None:
    if len(raw) > MAX_WORD:
        raise UsageError(f"{label} is too long: {len(raw):,} characters, at most {MAX_WORD}")


def _kind_of(word: str) -> str:
    word = word.strip().lower()
    if word in ("duration", "dur"):
        return "duration"
    if word in ("n", "int", "num", "number"):
        return "int" if word in ("n", "int") else "str"
    return "str"


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


MAX_INT = 2**63 - 1  # the databases' BIGINT: a larger number cannot name or count anything here


def as_id(raw: str | None) -> int | None:
    """A record id written as digits (`12`, `#12`), or None when it is not one that can exist."""
    text = (raw or "").strip().removeprefix("#")
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) <= MAX_INT:
        return None
    return int(text)


_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>|@([A-Z0-9]+)")


def as_user(raw: str | None) -> str | None:
    """A Slack user written as Slack sends a mention (`<@U0ABC|ada>`, escaped commands) or by hand
    (`@U0ABC`); None when it is not one."""
    match = _MENTION.fullmatch((raw or "").strip())
    return (match.group(1) or match.group(2)) if match else None


def _convert(label: str, kind: str, raw: str) -> Any:
    if kind == "int":
        if not re.fullmatch(r"\+?[0-9]+", raw):
            raise UsageError(Text(f"{label} must be a whole number, got ", Code(_clip(raw))))
        if len(raw) > 19 or int(raw) > MAX_INT:
            raise UsageError(Text(f"{label} is too large, got ", Code(_clip(raw))))
        return int(raw)
    if kind == "signed":
        if not re.fullmatch(r"[+-][0-9]+", raw):
            raise UsageError(Text(f"{label} must be a signed whole number such as +50 or -20, got ", Code(_clip(raw))))
        if len(raw) > 20 or abs(int(raw)) > MAX_INT:
            raise UsageError(Text(f"{label} is too large, got ", Code(_clip(raw))))
        return int(raw)
    if kind == "duration":
        try:
            value: timedelta = parse_duration(raw)
        except ValueError:
            raise UsageError(Text(f"{label} must be a duration such as 90s, 15m, 24h or 7d, got ", Code(_clip(raw)))) from None
        if value > MAX_WINDOW:
            raise UsageError(Text(f"{label} can be at most {format_duration(MAX_WINDOW)}, got ", Code(_clip(raw))))
        if value <= timedelta(0):
            raise UsageError(Text(f"{label} must be longer than 0s, got ", Code(_clip(raw))))
        return value
    return raw


def tokenize(text: str) -> list[str]:
    """Split a command line the way a shell would, with Slack's smart quotes folded. Control
    characters and overlong lines are refused here, before any command sees them."""
    control = _CONTROL.search(text)
    if control:
        raise UsageError(f"the text contains a control character (U+{ord(control.group()):04X}); "
                         "only printable characters, tabs and new lines are taken")
    if len(text) > MAX_LINE:
        raise UsageError(f"the command is too long: {len(text):,} characters, at most {MAX_LINE:,}")
    text = text.replace("\u201c", '"').replace("\u201d", '"').replace("\u2018", "'").replace("\u2019", "'")
    try:
        return shlex.split(text)
    except ValueError:
        raise UsageError("unbalanced quotes") from None
