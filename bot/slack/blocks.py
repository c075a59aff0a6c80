"""Block Kit from a neutral Reply: the only place Slack markup is made.

Every plain string is escaped (`&`, `<`, `>`), whatever its source; Slack tokens (`<@U…>`,
`<#C…>`, `<url|label>`, `*bold*`, `:emoji:`) come only from typed pieces (bot/text.py). Every
message stays within Slack's limits (SPEC §10): at most 50 blocks and 12,000 characters, text
split only at line ends (an overlong line at a word boundary), never inside a token; when the
body does not fit, the lines at the reply's `keep` end are shown with "N of M" and `more`,
and the head, fields, buttons and footer are kept.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from ..render_text import plain_text
from ..reply import Button, Reply
from ..text import Channel, Code, Em, Icon, Link, Status, Text, User

MAX_BLOCKS = 50
MAX_CHARS = 12_000  # all the text of one message
SECTION_CHARS = 3_000  # one section's text (Slack's own limit)
FIELD_CHARS = 2_000
FALLBACK_CHARS = 1_000  # the notification text
STATUS_ICONS = {"ok": "white_check_mark", "warning": "warning", "failed": "x", "info": "information_source"}

_ICON_NAME = re.compile(r"^[a-z0-9_+'-]{1,100}$")
_WORDS = re.compile(r"\s+|\S+")


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _safe_url(url: str) -> str:
    # a URL ends at `|` or `>` inside a Slack link token: keep ours whole
    return url.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")


def atoms(value: Any, names: Mapping[str, str] | None = None) -> list[str]:
    """The value as Slack mrkdwn in pieces that may be split between, never inside."""
    parts = value.parts if isinstance(value, Text) else (str(value),) if value is not None else ()
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            # a word is an atom; whitespace runs are where a long line may be split
            out.extend(escape(word) for word in _WORDS.findall(part))
        elif isinstance(part, User):
            if part.ping:
                out.append(f"<@{escape(part.id)}>")
            else:
                out.append("@" + escape(" ".join(((names or {}).get(part.id) or part.id).split())))
        elif isinstance(part, Channel):
            out.append(f"<#{escape(part.id)}>")
        elif isinstance(part, Link):
            if part.url.startswith(("https://", "http://", "mailto:")):
                # one line (a token is never split, and the splitter breaks at line ends)
                label = escape(" ".join(part.label.split()).replace("|", "¦")[:300])
                out.append(f"<{_safe_url(part.url)}|{label}>" if label else f"<{_safe_url(part.url)}>")
            else:
                out.extend(escape(word) for word in _WORDS.findall(str(part)))
        elif isinstance(part, Em):
            inner = atoms(part.text, names)
            words = [i for i, a in enumerate(inner) if not a.isspace()]
            if not words:
                out.extend(inner)
                continue
            first, last = words[0], words[-1]
            inner[first] = "*" + inner[first]
            inner[last] = inner[last] + "*"
            out.extend(inner)
        elif isinstance(part, Code):
            text = part.text.replace("`", "'")
            if len(text) <= 200 and "\n" not in text:
                out.append(f"`{escape(text)}`" if text else "")
            else:
                out.extend(escape(word) for word in _WORDS.findall(text))
        elif isinstance(part, Icon):
            if _ICON_NAME.match(part.name):
                out.append(f":{part.name}:")
        elif isinstance(part, Status):
            out.append(f":{STATUS_ICONS[part.level]}:")
    return [a for a in out if a]


def mrkdwn(value: Any, names: Mapping[str, str] | None = None) -> str:
    return "".join(atoms(value, names))


def split_atoms(items: list[str], limit: int) -> list[str]:
    """Join atoms into chunks of at most `limit` characters, breaking at line ends first, then
    between words; a single word longer than `limit` (no token is) is cut between characters
    but not inside an `&amp;`-style entity."""
    chunks: list[str] = []
    current = ""
    for atom in items:
        while len(atom) > limit:  # one enormous word
            if current:
                chunks.append(current)
                current = ""
            cut = limit
            amp = atom.rfind("&", max(0, cut - 5), cut)
            if amp != -1 and ";" not in atom[amp:cut]:
                cut = amp
            chunks.append(atom[:cut])
            atom = atom[cut:]
        if len(current) + len(atom) > limit:
            newline = current.rfind("\n")
            if newline > 0 and not atom.isspace():
                # carry the unfinished last line over, so lines are not split when they fit
                head, tail = current[:newline], current[newline + 1:]
                if len(tail) + len(atom) <= limit:
                    chunks.append(head)
                    current = tail + atom
                    continue
            if current.strip():
                chunks.append(current.rstrip())
            current = "" if atom.isspace() else atom
        else:
            current += atom
    if current.strip():
        chunks.append(current.rstrip())
    return [c.strip("\n") for c in chunks if c.strip()]


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_CHARS], "verbatim": True}}


def fields_section(fields: list[tuple[Any, Any]], names: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"type": "section", "fields": [{"type": "mrkdwn", "text": _field(k, v, names), "verbatim": True}
                                          for k, v in fields[:10]]}


def _field(key: Any, value: Any, names: Mapping[str, str] | None) -> str:
    parts = (atoms(Text(Em(key)), names) + ["\n"] if key else []) + atoms(value, names)
    return _fit(parts, FIELD_CHARS) or " "


def _fit(parts: list[str], limit: int) -> str:
    """The atoms joined, or as much as fits in `limit` followed by "…"."""
    text = "".join(parts)
    if len(text) <= limit:
        return text
    return split_atoms(parts, limit - 1)[0] + "…"


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_CHARS], "verbatim": True}]}


def plain(text: Any, limit: int) -> dict[str, Any]:
    """A plain_text object (Slack shows it as is: no escaping, no markup)."""
    value = str.__str__(str(text)) or " "
    return {"type": "plain_text", "text": value if len(value) <= limit else value[:limit - 1] + "…"}


def button(b: Button, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "text": plain(b.label, 75),
        "action_id": b.action_id,
        "value": b.value[:2000],
    }
    if b.style:
        element["style"] = b.style
    if b.confirm:
        element["confirm"] = {
            "title": plain("Are you sure?", 100),
            # Slack's confirm text is plain_text: shown as is, so nothing in it is ever a token
            "text": plain(plain_text(b.confirm, names), 300),
            "confirm": plain(b.label, 30),
            "deny": plain("Cancel", 30),
        }
    return element


def actions(buttons: list[Button], names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    # Slack allows 25 elements per actions block, and action_ids must be unique within a message:
    # a second button of the same action (one per row of a list) gets "~2", "~3"… (the registry
    # reads the action without it).
    elements, seen = [], {}
    for b in buttons[:100]:
        element = button(b, names)
        seen[b.action_id] = seen.get(b.action_id, 0) + 1
        if seen[b.action_id] > 1:
            element["action_id"] = f"{b.action_id}~{seen[b.action_id]}"
        elements.append(element)
    return [{"type": "actions", "elements": elements[i:i + 25]} for i in range(0, len(elements), 25)]


def _head(reply: Reply, names: Mapping[str, str] | None) -> list[str]:
    head = atoms(reply.text, names)
    if reply.tag:
        head = atoms(Text(Em(f"[{reply.tag.upper()}]"), " ")) + head
    return head


def _size(block: dict[str, Any]) -> int:
    if block["type"] == "section":
        return len(block.get("text", {}).get("text", "")) + sum(len(f["text"]) for f in block.get("fields", []))
    if block["type"] == "context":
        return sum(len(e["text"]) for e in block["elements"])
    if block["type"] == "actions":
        return sum(len(e["text"]["text"]) + len(e.get("confirm", {}).get("text", {}).get("text", ""))
                   for e in block["elements"])
    return 0


def render_blocks(reply: Reply, names: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    head = [section(_fit(_head(reply, names), SECTION_CHARS) or " ")]
    tail: list[dict[str, Any]] = []
    if reply.fields:
        for i in range(0, min(len(reply.fields), 40), 10):
            tail.append(fields_section(reply.fields[i:i + 10], names))
    if reply.buttons:
        tail.extend(actions(reply.buttons, names))
    if reply.footer:
        tail.append(context(_fit(atoms(reply.footer, names), SECTION_CHARS)))
    body = _body(reply, names, budget_blocks=MAX_BLOCKS - len(head) - len(tail),
                 budget_chars=MAX_CHARS - FALLBACK_CHARS - sum(_size(b) for b in head + tail))
    return head + body + tail


def _body(reply: Reply, names: Mapping[str, str] | None, *, budget_blocks: int, budget_chars: int) -> list[dict]:
    lines = [atoms(line, names) for line in reply.lines]
    if not lines:
        return []
    sections = _pack(lines)
    if len(sections) <= budget_blocks and sum(len(s) for s in sections) <= budget_chars:
        return [section(s) for s in sections]
    # Too long for one message: show what fits from the `keep` end and say how much that is.
    total = len(lines)
    note_room = 400
    order = list(range(total)) if reply.keep != "end" else list(range(total - 1, -1, -1))
    chosen: list[int] = []
    for i in order:
        trial = sorted(chosen + [i])
        packed = _pack([lines[j] for j in trial])
        if len(packed) > budget_blocks - 1 or sum(len(s) for s in packed) > budget_chars - note_room:
            break
        chosen = trial
    if not chosen:  # even one line is too long: show as much of it as fits
        packed = [_fit(lines[order[0]], min(SECTION_CHARS - 100, budget_chars - note_room))]
        shown = 1
    else:
        packed, shown = _pack([lines[j] for j in chosen]), len(chosen)
    what = "newest" if reply.keep == "end" else "first"
    note = atoms(Text(f"Showing the {what} {shown} of {total} lines", " — full list: " if reply.more else ".",
                      reply.more), names)
    blocks = [section(s) for s in packed]
    note_block = context(_fit(note, note_room))
    return [note_block] + blocks if reply.keep == "end" else blocks + [note_block]


def _pack(lines: Iterable[list[str]]) -> list[str]:
    """Lines (each a list of atoms) into section texts of at most SECTION_CHARS."""
    joined: list[str] = []
    for i, line in enumerate(lines):
        if i:
            joined.append("\n")
        joined.extend(line)
    return split_atoms(joined, SECTION_CHARS - 100)


def fallback_text(reply: Reply, names: Mapping[str, str] | None = None) -> str:
    return _fit(_head(reply, names), FALLBACK_CHARS) or " "


def message_size(blocks: list[dict[str, Any]], text: str = "") -> int:
    """All the text of a message, as SPEC §10 counts it."""
    return len(text) + sum(_size(b) for b in blocks)
