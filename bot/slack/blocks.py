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


# Slack has no escape for its formatting characters. A `*`, `_` or `~` that could open bold,
# italics or strike (at the start of a word and not followed by a space: not `acct_1`, not `evt_…`;
# with no opener a closing mark formats nothing), and every backtick, is sent as the fallback of a
# date token with an invalid format, which Slack shows as plain text (the technique of jsx-slack's
# <Escape>); a `>` that would start a quote gets an invisible soft hyphen. A mark at the very end
# of a string counts as followed by text: the next piece (an emoji, a mention) may follow it.
_WORD_CHAR = r"[^\W_]"
_FORMATTING = re.compile(rf"`|(?<!{_WORD_CHAR})[*_~](?!\s)")  # code spans start anywhere
_QUOTE = re.compile(r"(^|\n)([ \t]*)&gt;")


def _inert(match: re.Match) -> str:
    return "<!date^00000000^{_}|" + match.group(0) + ">"


def escape_plain(text: str) -> str:
    """A plain string as Slack mrkdwn that shows it as typed: `& < >` escaped, formatting inert."""
    text = escape(text)
    if "*" in text or "_" in text or "~" in text or "`" in text:
        text = _FORMATTING.sub(_inert, text)
    if "&gt;" in text:
        text = _QUOTE.sub("\\1\\2\u00ad&gt;", text)
    return text


class _Plain(str):
    """An atom made from plain text: it may be split at its whitespace (a token never is)."""

    __slots__ = ()


def _safe_url(url: str) -> str:
    # a URL ends at `|` or `>` inside a Slack link token: keep ours whole
    return url.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")


def atoms(value: Any, names: Mapping[str, str] | None = None) -> list[str]:
    """The value as Slack mrkdwn in pieces that may be split between, never inside (a plain
    string is one piece that may also be split at its whitespace: see `split_atoms`)."""
    parts = value.parts if isinstance(value, Text) else (str(value),) if value is not None else ()
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            if part:
                out.append(_Plain(escape_plain(part)))
        elif isinstance(part, User):
            if part.ping:
                out.append(f"<@{escape(part.id)}>")
            else:
                out.append("@" + escape_plain(" ".join(((names or {}).get(part.id) or part.id).split())))
        elif isinstance(part, Channel):
            out.append(f"<#{escape(part.id)}>")
        elif isinstance(part, Link):
            if part.url.startswith(("https://", "http://", "mailto:")):
                # one line (a token is never split, and the splitter breaks at line ends)
                label = escape(" ".join(part.label.split()).replace("|", "¦")[:300])
                out.append(f"<{_safe_url(part.url)}|{label}>" if label else f"<{_safe_url(part.url)}>")
            elif str(part):
                out.append(_Plain(escape_plain(str(part))))
        elif isinstance(part, Em):
            inner = atoms(part.text, names)
            words = [i for i, a in enumerate(inner) if a.strip()]
            if not words:
                out.extend(inner)
                continue
            first, last = words[0], words[-1]
            inner[first] = _wrap(inner[first], "*", "")
            inner[last] = _wrap(inner[last], "", "*")
            out.extend(inner)
        elif isinstance(part, Code):
            text = part.text.replace("`", "'")
            if len(text) <= 200 and "\n" not in text:
                out.append(f"`{escape(text)}`" if text else "")
            elif text:
                out.append(_Plain(escape_plain(text)))
        elif isinstance(part, Icon):
            if _ICON_NAME.match(part.name):
                out.append(f":{part.name}:")
        elif isinstance(part, Status):
            out.append(f":{STATUS_ICONS[part.level]}:")
    return [a for a in out if a]


def _wrap(atom: str, before: str, after: str) -> str:
    """`before` and `after` around the atom's text, inside its surrounding whitespace."""
    core = atom.strip()
    start = atom.index(core[0])
    end = start + len(core)
    wrapped = atom[:start] + before + core + after + atom[end:]
    return _Plain(wrapped) if isinstance(atom, _Plain) else wrapped


def mrkdwn(value: Any, names: Mapping[str, str] | None = None) -> str:
    return "".join(atoms(value, names))


def split_atoms(items: list[str], limit: int) -> list[str]:
    """Join atoms into chunks of at most `limit` characters, breaking at line ends first, then
    between words; a single word longer than `limit` (no token is) is cut between characters
    but not inside an `&amp;`-style entity or an inert formatting character."""
    text = "".join(items)
    if len(text) <= limit:  # the usual case: it all fits
        return [text.rstrip().strip("\n")] if text.strip() else []
    # Lines, each a list of atoms (atoms are cut at their newlines: only plain text holds any).
    lines: list[list[str]] = [[]]
    for atom in items:
        if "\n" in atom:
            first, *rest = atom.split("\n")
            if first:
                lines[-1].append(_Plain(first))
            for piece in rest:
                lines.append([_Plain(piece)] if piece else [])
        else:
            lines[-1].append(atom)
    chunks: list[str] = []
    current: list[str] = []  # the lines of the chunk being filled
    size = -1
    for line in lines:
        joined = "".join(line)
        if size + 1 + len(joined) <= limit:
            current.append(joined)
            size += 1 + len(joined)
            continue
        if current:
            chunks.append("\n".join(current))
        if len(joined) <= limit:
            current, size = [joined], len(joined)
            continue
        pieces = _split_words(line, limit)  # one line longer than a chunk: cut between words
        chunks.extend(pieces[:-1])
        current, size = [pieces[-1]], len(pieces[-1])
    if current:
        chunks.append("\n".join(current))
    return [c.rstrip().strip("\n") for c in chunks if c.strip()]


def _split_words(line: list[str], limit: int) -> list[str]:
    """One line's atoms (plain ones cut into words and the whitespace between) in chunks of at most
    `limit` characters, never cut inside a token."""
    words: list[str] = []
    for atom in line:
        words.extend(_WORDS.findall(atom) if isinstance(atom, _Plain) else (atom,))
    chunks: list[str] = []
    current = ""
    for word in words:
        while len(word) > limit:  # one enormous word
            if current.strip():
                chunks.append(current.rstrip())
            current = ""
            cut = _cut_at(word, limit)
            chunks.append(word[:cut])
            word = word[cut:]
        if len(current) + len(word) > limit:
            if current.strip():
                chunks.append(current.rstrip())
            current = "" if word.isspace() else word
        else:
            current += word
    chunks.append(current.rstrip())
    return [c for c in chunks if c.strip()] or [""]


def _cut_at(word: str, limit: int) -> int:
    """Where to cut an enormous word: at `limit`, moved back before an entity or an inert
    formatting token it would cut."""
    cut = limit
    amp = word.rfind("&", max(0, cut - 5), cut)
    if amp != -1 and ";" not in word[amp:cut]:
        cut = amp
    token = word.rfind("<!date^", max(0, cut - 23), cut)
    if token != -1 and ">" not in word[token:cut]:
        cut = token
    return max(cut, 1)


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
