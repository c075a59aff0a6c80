"""Revenue impact: hourly loss = (baseline − current) × hourly traffic × AOV.

Rates are written `3.2%` or `0.032`; traffic `1200`, `1200/h` or `28800/d`;
AOV `80` or `$80`. Anything else is refused with a sentence saying why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta

from ..errors import UsageError
from ..text import Code, Text

FIELDS = ("baseline", "current", "traffic", "aov")
_NUMBER = r"[+-]?(?:[0-9][0-9,_]*(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?"  # ASCII digits only
# Past these the figures are a typo, not a shop (and products of large floats reach inf, which
# would read "$inf/hour"): with both bounds the hourly loss is at most $10^15, always finite.
MAX_TRAFFIC = 1e9  # visits per hour
MAX_AOV = 1e6


def _number(raw: str, label: str) -> float:
    text = raw.strip().replace(",", "").replace("_", "")
    if not re.fullmatch(_NUMBER, text, flags=re.IGNORECASE):
        raise ValueError(Text(f"{label} must be a number, got ", Code(raw[:30])))
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(Text(f"{label} must be a finite number, got ", Code(raw[:30])))
    return value


def parse_rate(raw: str | float, label: str = "rate") -> float:
    """`3.2%` → 0.032; `0.032` → 0.032; a rate must lie between 0 and 1 (0%–100%)."""
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        text = raw.strip()
        percent = text.endswith("%")
        value = _number(text.rstrip("%"), label)
        if percent:
            value /= 100
        elif value > 1:
            raise ValueError(Text(f"{label} ", Code(raw[:30]), " is above 1: write a rate as ", Code("3.2%"), " or ",
                                  Code("0.032")))
    if not 0 <= value <= 1:
        raise ValueError(Text(f"{label} must be between 0% and 100%, got ", Code(str(raw)[:30])))
    return value


def parse_traffic(raw: str | float) -> float:
    """Visits per hour: `1200`, `1200/h`, `1200/hr`, `28800/d`."""
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        text = raw.strip().lower().replace(" ", "")
        per = 1.0
        match = re.fullmatch(r"(.*?)/(h|hr|hour|d|day)", text)
        if match:
            text = match.group(1)
            per = 24.0 if match.group(2) in ("d", "day") else 1.0
        value = _number(text, "traffic") / per
    if value < 0:
        raise ValueError(Text("traffic cannot be negative, got ", Code(str(raw)[:30])))
    if value > MAX_TRAFFIC:
        raise ValueError(Text(f"traffic can be at most {MAX_TRAFFIC:,.0f} visits an hour, got ", Code(str(raw)[:30])))
    return value


def parse_money(raw: str | float, label: str = "aov") -> float:
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        value = _number(raw.strip().lstrip("$€£"), label)
    if value < 0:
        raise ValueError(Text(f"{label} cannot be negative, got ", Code(str(raw)[:30])))
    if value > MAX_AOV:
        raise ValueError(Text(f"{label} can be at most {MAX_AOV:,.0f}, got ", Code(str(raw)[:30])))
    return value


PARSERS = {
    "baseline": lambda raw: parse_rate(raw, "baseline"),
    "current": lambda raw: parse_rate(raw, "current"),
    "traffic": parse_traffic,
    "aov": lambda raw: parse_money(raw, "aov"),
}


def parse_figures(args: dict) -> dict[str, float]:
    """The impact figures present in parsed command arguments; UsageError on nonsense."""
    figures: dict[str, float] = {}
    for name in FIELDS:
        if args.get(name) is None:
            continue
        try:
            figures[name] = PARSERS[name](args[name])
        except ValueError as exc:
            raise UsageError(exc.args[0] if exc.args else str(exc)) from None  # keeps typed text
    return figures


@dataclass(frozen=True)
class Impact:
    baseline: float
    current: float
    traffic: float
    aov: float

    @classmethod
    def from_figures(cls, figures: dict | None) -> "Impact | None":
        if not figures or any(figures.get(name) is None for name in FIELDS):
            return None
        return cls(*(float(figures[name]) for name in FIELDS))

    @property
    def drop(self) -> float:
        return max(self.baseline - self.current, 0.0)

    @property
    def hourly(self) -> float:
        return self.drop * self.traffic * self.aov

    @property
    def daily(self) -> float:
        return self.hourly * 24

    def lost_over(self, duration: timedelta) -> float:
        return self.hourly * max(duration.total_seconds(), 0) / 3600

    def view(self, duration: timedelta | None = None) -> dict:
        """Figures formatted for templates (currency symbol left to the template)."""
        out = {
            "baseline": pct(self.baseline), "current": pct(self.current),
            "drop": pct(self.drop), "relative_drop": pct(self.drop / self.baseline) if self.baseline else "n/a",
            "traffic": f"{self.traffic:,.0f}", "aov": money(self.aov),
            "hourly": money(self.hourly), "daily": money(self.daily),
            "hourly_value": self.hourly, "no_loss": self.hourly == 0,
        }
        if duration is not None:
            out["lost_so_far"] = money(self.lost_over(duration))
            out["lost_so_far_value"] = self.lost_over(duration)
        return out


def pct(value: float) -> str:
    text = f"{value * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text}%"


def money(value: float) -> str:
    return f"{value:,.2f}"


def missing(figures: dict | None) -> list[str]:
    return [name for name in FIELDS if not figures or figures.get(name) is None]
