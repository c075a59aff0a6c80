"""The console renderer: a Reply as plain text, buttons numbered; people by name where known."""

from __future__ import annotations

from typing import Any, Mapping

from .reply import Reply
from .text import Channel, Code, Em, Icon, Link, Status, Text, User

STATUS_MARKS = {"ok": "✓", "warning": "!", "failed": "✗", "info": "i"}


def plain_text(value: Any, names: Mapping[str, str] | None = None) -> str:
    """A string or Text as a terminal shows it: plain strings as they are, pieces in words."""
    if not isinstance(value, Text):
        return "" if value is None else str(value)
    out: list[str] = []
    after_icon = False
    for part in value.parts:
        at_line_start = not out or out[-1].endswith("\n")
        if isinstance(part, str):
            # an emoji that began a line leaves no space behind in a terminal
            out.append(part[1:] if after_icon and at_line_start and part.startswith(" ") else part)
            after_icon = False
            continue
        after_icon = isinstance(part, Icon) and at_line_start
        if isinstance(part, User):
            out.append("@" + ((names or {}).get(part.id) or part.id))
        elif isinstance(part, Channel):
            out.append(f"#{part.id}")
        elif isinstance(part, Link):
            out.append(str(part))
        elif isinstance(part, Em):
            out.append(plain_text(part.text, names))
        elif isinstance(part, Code):
            out.append(part.text)
        elif isinstance(part, Status):
            out.append(STATUS_MARKS[part.level])
        elif isinstance(part, Icon):
            continue
    return "".join(out)


def render_text(reply: Reply, numbers: list[int] | None = None, names: Mapping[str, str] | None = None) -> str:
    out = []
    head = plain_text(reply.text, names)
    if reply.tag:
        head = f"[{reply.tag.upper()}] {head}"
    out.append(head)
    for line in reply.lines:
        out.extend("  " + part for part in plain_text(line, names).splitlines())
    if reply.fields:
        width = max(len(k) for k, _ in reply.fields)
        out.extend(f"  {k.ljust(width)}  {plain_text(v, names)}" for k, v in reply.fields)
    for i, button in enumerate(reply.buttons):
        number = numbers[i] if numbers else i + 1
        out.append(f"  [{number}] {button.label}")
    if reply.footer:
        out.append("  " + plain_text(reply.footer, names))
    return "\n".join(out)
