"""The neutral reply every command returns; renderers turn it into Block Kit or text."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Button:
    label: str
    action: str  # "family.action"; routed back to the family that offered it
    value: str = ""
    style: str | None = None  # "primary" | "danger"
    confirm: str | None = None  # a confirm dialog's question

    @property
    def action_id(self) -> str:
        return f"revops:{self.action}"


@dataclass
class Reply:
    text: str
    lines: list[str] = field(default_factory=list)
    fields: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    private: bool = True
    tag: str | None = None  # e.g. "dry run"
    footer: str | None = None
    replace: bool = False  # a click's answer replaces the message that held the button

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fields"] = [list(f) for f in self.fields]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reply":
        data = dict(data)
        data["fields"] = [tuple(f) for f in data.get("fields", [])]
        data["buttons"] = [Button(**b) for b in data.get("buttons", [])]
        return cls(**data)

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
