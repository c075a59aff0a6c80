"""The console renderer: a Reply as plain text, buttons numbered."""

from __future__ import annotations

import re

from .reply import Reply

_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_EMOJI = re.compile(r":[a-z_+-]+: ?")


def plain_text(text: str) -> str:
    text = _MENTION.sub(r"@\1", text)
    text = _EMOJI.sub("", text)
    return text.replace("*", "").replace("`", "").replace("_(", "(").replace(")_", ")")


def render_text(reply: Reply, numbers: list[int] | None = None) -> str:
    out = []
    head = plain_text(reply.text)
    if reply.tag:
        head = f"[{reply.tag.upper()}] {head}"
    out.append(head)
    for line in reply.lines:
        out.extend("  " + plain_text(part) for part in line.splitlines())
    if reply.fields:
        width = max(len(k) for k, _ in reply.fields)
        out.extend(f"  {k.ljust(width)}  {plain_text(str(v))}" for k, v in reply.fields)
    for i, button in enumerate(reply.buttons):
        number = numbers[i] if numbers else i + 1
        out.append(f"  [{number}] {button.label}")
    if reply.footer:
        out.append("  " + plain_text(reply.footer))
    return "\n".join(out)
