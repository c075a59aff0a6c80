"""Typed text: what a person reads, as plain strings plus typed pieces that each renderer draws
its own way (Slack tokens, terminal text, HTML).

A plain string is always data: no renderer reads markup in it, whoever wrote it (a person, an
alert, Stripe, the database, the bot). Mentions, channel links, links with a label, emphasis,
code, emoji and statuses exist only as pieces, so only the bot's own code can make them.

`Text` is a `str` (its plain reading: what logs, tests and `in` see) that also carries its
pieces. Anything that turns it back into a bare `str` (slicing, f-strings, `.strip()`) drops the
pieces and leaves plain data, which renderers escape: the safe way to fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Union

STATUS_LEVELS = ("ok", "warning", "failed", "info")


@dataclass(frozen=True)
class User:
    """A person by Slack user id. `ping=False`: shown by name, never a notification."""

    id: str
    ping: bool = True

    def __str__(self) -> str:
        return f"@{self.id}"


@dataclass(frozen=True)
class Channel:
    id: str

    def __str__(self) -> str:
        return f"#{self.id}"


@dataclass(frozen=True)
class Link:
    url: str
    label: str

    def __str__(self) -> str:
        return f"{self.label} ({self.url})" if self.label and self.label != self.url else self.url


@dataclass(frozen=True)
class Em:
    """Emphasis (bold in Slack) around text that may hold other pieces."""

    text: "Text"

    def __post_init__(self) -> None:
        if not isinstance(self.text, Text):
            object.__setattr__(self, "text", Text(self.text))

    def __str__(self) -> str:
        return str.__str__(self.text)


@dataclass(frozen=True)
class Code:
    """An identifier, amount or command shown as code."""

    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", str.__str__(str(self.text)))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Icon:
    """An emoji by name (`rotating_light`); the console shows nothing, Slack the emoji."""

    name: str

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True)
class Status:
    """ok / warning / failed / info, drawn as each surface draws a status."""

    level: str

    def __post_init__(self) -> None:
        if self.level not in STATUS_LEVELS:
            raise ValueError(f"status must be one of {', '.join(STATUS_LEVELS)}")

    def __str__(self) -> str:
        return ""


PIECES = (User, Channel, Link, Em, Code, Icon, Status)
Piece = Union[str, User, Channel, Link, Em, Code, Icon, Status]


class Text(str):
    """Plain strings and pieces; `str(text)` is the plain reading."""

    parts: tuple

    def __new__(cls, *parts: Any) -> "Text":
        flat: list = []
        for part in parts:
            if part is None:
                continue
            if isinstance(part, Text):
                items: Iterable = part.parts
            elif isinstance(part, PIECES):
                items = (part,)
            else:
                items = (str.__str__(part) if isinstance(part, str) else str(part),)
            for item in items:
                if isinstance(item, str):
                    if not item:
                        continue
                    if flat and isinstance(flat[-1], str):
                        flat[-1] += item
                        continue
                flat.append(item)
        obj = super().__new__(cls, "".join(str(p) for p in flat))
        obj.parts = tuple(flat)
        return obj

    def __add__(self, other: Any) -> "Text":  # type: ignore[override]
        return Text(self, other)

    def __radd__(self, other: Any) -> "Text":
        return Text(other, self)

    def __repr__(self) -> str:
        return f"Text{self.parts!r}"

    def __reduce__(self):
        return (Text, self.parts)


Textlike = Union[str, Text]


def join(separator: Any, items: Iterable[Any]) -> Text:
    """`separator.join(items)` that keeps the pieces."""
    out: list = []
    for i, item in enumerate(items):
        if i:
            out.append(separator)
        out.append(item)
    return Text(*out)


def clip(value: Any, limit: int) -> Text:
    """At most `limit` characters of plain reading, cut at a word boundary, then "…";
    pieces are kept whole or dropped, never cut."""
    text = value if isinstance(value, Text) else Text(value)
    if len(text) <= limit:
        return text
    out: list = []
    room = limit - 1
    for part in text.parts:
        size = len(str(part))
        if isinstance(part, str):
            if size <= room:
                out.append(part)
                room -= size
                continue
            cut = part[:room]
            space = cut.rfind(" ")
            if space > room // 2:
                cut = cut[:space]
            out.append(cut.rstrip())
            break
        if size > room:
            break
        out.append(part)
        room -= size
    out.append("…")
    return Text(*out)


def users_in(*values: Any, quiet_only: bool = False) -> set[str]:
    """Every user id a value's pieces name (for looking their names up before rendering);
    `quiet_only`: only those shown by name without a notification (Slack renders the others)."""
    found: set[str] = set()
    for value in values:
        if isinstance(value, Text):
            for part in value.parts:
                if isinstance(part, User) and (part.ping is False or not quiet_only):
                    found.add(part.id)
                elif isinstance(part, Em):
                    found |= users_in(part.text, quiet_only=quiet_only)
    return found


# --- storage (the outbox keeps replies as JSON) ----------------------------

def to_json(value: Any) -> Any:
    if isinstance(value, Text):
        return {"t": [_piece_json(p) for p in value.parts]}
    return value


def _piece_json(part: Any) -> Any:
    if isinstance(part, str):
        return part
    if isinstance(part, User):
        return {"user": part.id, "ping": part.ping}
    if isinstance(part, Channel):
        return {"channel": part.id}
    if isinstance(part, Link):
        return {"link": part.url, "label": part.label}
    if isinstance(part, Em):
        return {"em": to_json(part.text)}
    if isinstance(part, Code):
        return {"code": part.text}
    if isinstance(part, Icon):
        return {"icon": part.name}
    return {"status": part.level}


def from_json(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return Text(*(_piece_from(p) for p in value["t"]))
    return value


def _piece_from(data: Any) -> Any:
    if isinstance(data, str):
        return data
    if "user" in data:
        return User(data["user"], bool(data.get("ping", True)))
    if "channel" in data:
        return Channel(data["channel"])
    if "link" in data:
        return Link(data["link"], data.get("label", ""))
    if "em" in data:
        inner = from_json(data["em"])
        return Em(inner if isinstance(inner, Text) else Text(inner))
    if "code" in data:
        return Code(data["code"])
    if "icon" in data:
        return Icon(data["icon"])
    return Status(data.get("status", "info"))
