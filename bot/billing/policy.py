"""Which events the mirror takes: the pinned API version, the key's mode, the connected accounts.

    API version  every call sends `STRIPE_API_VERSION` (default: the pinned SDK's own). An event
                 keeps the version it was rendered in; one the handlers' readers understand
                 (`understood`: from OLDEST_UNDERSTOOD up to the pin) is applied as it is, any
                 other has its object re-fetched at the pin before it is applied (fetch.py).
    mode         an event whose `livemode` differs from the key's (sk_live_/rk_live_ against
                 sk_test_/rk_test_) is stored as ignored with that reason: a live event never
                 changes a test-mode mirror, nor a test event a live one.
    account      an event of a connected account (`account: acct_…`, or a thin event's
                 `context`) is stored with its account and ignored unless `[stripe] accounts`
                 names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from stripe import api_version as SDK_API_VERSION

# The oldest version whose shapes the readers (mirror.py, handlers.py) were written for: they read
# both the shapes before 2025-03-31.basil (invoice.subscription, charge.invoice, a subscription's
# current_period_end) and after (parent.subscription_details, invoice_payment, per-item periods).
OLDEST_UNDERSTOOD = "2020-08-27"


def version_date(version: str | None) -> str:
    """`2025-03-31.basil` -> `2025-03-31` (an API version sorts by its date)."""
    return (version or "").split(".", 1)[0]


def understood(version: str | None, pinned: str) -> bool:
    """True when an event of this version can be read as it is (None: a thin event, no version)."""
    if not version:
        return True
    return OLDEST_UNDERSTOOD <= version_date(version) <= version_date(pinned)


def key_livemode(secret_key: str | None) -> bool | None:
    """True for a live key, False for a test key, None when the key says neither (or is missing)."""
    key = secret_key or ""
    if key.startswith(("sk_live_", "rk_live_")):
        return True
    if key.startswith(("sk_test_", "rk_test_")):
        return False
    return None


def event_account(event: dict[str, Any]) -> str | None:
    """The connected account an event belongs to (v1 `account`, a thin event's `context`)."""
    account = event.get("account") or (event.get("context") if is_thin(event) else None)
    return str(account)[:255] if account else None


def is_thin(event: dict[str, Any]) -> bool:
    return event.get("object") == "v2.core.event"


@dataclass(frozen=True)
class EventPolicy:
    api_version: str = SDK_API_VERSION
    livemode: bool | None = None  # the key's mode; None: not known, every event's mode is taken
    accounts: frozenset[str] = frozenset()
    packs: Mapping[str, int] = field(default_factory=dict, hash=False)  # [credits.packs]
    invariants: tuple = field(default=(), hash=False)  # [[invariants]] (lineage.py)
    lineage_channel: str | None = None  # where a violation is posted: [slack] incident_channel

    @classmethod
    def from_settings(cls, settings) -> "EventPolicy":
        key = settings.env.stripe_secret_key
        return cls(api_version=settings.env.stripe_api_version,
                   livemode=key_livemode(key.get_secret_value() if key is not None else None),
                   accounts=frozenset(settings.cfg.stripe.accounts), packs=dict(settings.cfg.credits.packs),
                   invariants=tuple(settings.cfg.invariants), lineage_channel=settings.cfg.slack.incident_channel)

    def refusal(self, event: dict[str, Any]) -> str | None:
        """Why the mirror does not take this event (stored as ignored with this reason), or None."""
        if self.livemode is not None and "livemode" in event and bool(event.get("livemode")) != self.livemode:
            event_mode, key_mode = ("live", "test") if event.get("livemode") else ("test", "live")
            return (f"a {event_mode}-mode event and a {key_mode}-mode key (STRIPE_SECRET_KEY): not applied to "
                    f"the {key_mode}-mode mirror")
        account = event_account(event)
        if account and account not in self.accounts:
            return (f"an event of connected account {account}, which [stripe] accounts does not list: "
                    "not applied to the platform's mirror")
        return None

    def understood(self, event: dict[str, Any]) -> bool:
        return understood(event.get("api_version"), self.api_version)


ACCEPT_ALL = EventPolicy()
