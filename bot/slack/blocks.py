"""Block Kit built by small helpers from a neutral Reply (never pasted inline)."""

from __future__ import annotations

from typing import Any

from ..reply import Button, Reply

MAX_TEXT = 2900  # a section's text is limited to 3000 characters


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_TEXT]}}


def fields_section(fields: list[tuple[str, str]]) -> dict[str, Any]:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:1900]} for k, v in fields[:10]]}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:MAX_TEXT]}]}


def button(b: Button) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": b.label[:75]},
        "action_id": b.action_id,
        "value": b.value[:2000],
    }
    if b.style:
        element["style"] = b.style
    if b.confirm:
        element["confirm"] = {
            "title": {"type": "plain_text", "text": "Are you sure?"},
            "text": {"type": "mrkdwn", "text": b.confirm[:300]},
            "confirm": {"type": "plain_text", "text": b.label[:30]},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
    return element


def actions(buttons: list[Button]) -> dict[str, Any]:
    # action_ids must be unique within a message
    return {"type": "actions", "elements": [button(b) for b in buttons[:25]]}


def render_blocks(reply: Reply) -> list[dict[str, Any]]:
    head = reply.text if not reply.tag else f"*[{reply.tag.upper()}]* {reply.text}"
    blocks = [section(head)]
    body = "\n".join(reply.lines)
    while body:
        chunk, body = body[:MAX_TEXT], body[MAX_TEXT:]
        blocks.append(section(chunk))
    if reply.fields:
        for i in range(0, len(reply.fields), 10):
            blocks.append(fields_section(reply.fields[i:i + 10]))
    if reply.buttons:
        blocks.append(actions(reply.buttons))
    if reply.footer:
        blocks.append(context(reply.footer))
    return blocks[:50]


def fallback_text(reply: Reply) -> str:
    text = reply.text if not reply.tag else f"[{reply.tag.upper()}] {reply.text}"
    return text[:3000]
