"""The neutral reply every command returns; renderers turn it into Block Kit or text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .text import Textlike, from_json, to_json, users_in


@dataclass
class Button:
    label: str
    action: str  # "family.action"; routed back to the family that offered it
    value: str = ""
    style: str | None = None  # "primary" | "danger"
    confirm: Textlike | None = None  # a confirm dialog's question

    @property
    def action_id(self) -> str:
        return f"revops:{self.action}"


@dataclass
class Reply:
    """Plain strings or typed `Text` (bot/text.py) everywhere a person reads; never Slack markup.

    `keep`: when a renderer has to drop body lines to stay within its surface's limits, which
    end it keeps ("start", or "end" for lists whose newest entries come last); `more` says
    where the whole list is (e.g. a page link), shown with "N of M"."""

    text: Textlike
    lines: list[Textlike] = field(default_factory=list)
    fields: list[tuple[str, Textlike]] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    private: bool = True
    tag: str | None = None  # e.g. "dry run"
    footer: Textlike | None = None
    replace: bool = False  # a click's answer replaces the message that held the button
    keep: str = "start"
    more: Textlike | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["text"] = to_json(self.text)
        data["lines"] = [to_json(line) for line in self.lines]
        data["fields"] = [[k, to_json(v)] for k, v in self.fields]
        data["footer"] = to_json(self.footer)
        data["more"] = to_json(self.more)
        data["buttons"] = [{**asdict(b), "confirm": to_json(b.confirm)} for b in self.buttons]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reply":
        data = dict(data)
        data["text"] = from_json(data.get("text", ""))
        data["lines"] = [from_json(line) for line in data.get("lines", [])]
        data["fields"] = [(k, from_json(v)) for k, v in data.get("fields", [])]
        data["footer"] = from_json(data.get("footer"))
        data["more"] = from_json(data.get("more"))
        data["buttons"] = [Button(**{**b, "confirm": from_json(b.get("confirm"))}) for b in data.get("buttons", [])]
        return cls(**data)

    def users(self, quiet_only: bool = False) -> set[str]:
        """The user ids its typed pieces name (to look their names up before rendering);
        `quiet_only`: those shown by name without a notification (what Slack needs looked up)."""
        return users_in(self.text, *self.lines, *(v for _, v in self.fields), self.footer, self.more,
                        quiet_only=quiet_only)

    def plain(self) -> str:
        """Everything a person reads, as plain text (fallback text, logs)."""
        parts = [self.text]
        if self.tag:
            parts[0] = f"[{self.tag}] {self.text}"
        parts += self.lines
        parts += [f"{k}: {v}" for k, v in self.fields]
        if self.footer:
            parts.append(self.footer)
        return "\n".join(parts)
