"""What applying an event needs from Stripe, fetched BEFORE the transaction (no network call
inside a write transaction), at the pinned API version, and kept in the stored payload under
`revops.fetched` (so a replay of the stored copy needs no fetch):

    a thin event (`v2.core.event`)       its related object, when it is one the mirror keeps
    an event of a version not understood  its object, re-fetched at the pin (policy.understood)
    a paid payment-mode Checkout Session  its line items (Price and Product expanded), when the
                                          session's own metadata.credits does not say the credits

A fetch that fails is kept as `revops.fetch_error`: the handler that needed it stores the event as
`failed` with that reason (answered 200; `replay` fetches again). `prepare_all` is what every path
calls: the webhook, `replay`, and reconcile's replay of missed events.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.errors import UpstreamError

from .intake import REVOPS, annotations, problem
from .policy import EventPolicy, is_thin
from .stripe_client import RETRIEVABLE

log = logging.getLogger("revops.stripe")

CREDIT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
# The object kinds whose events the mirror applies (a thin event about another kind is ignored).
MIRRORED = ("customer", "subscription", "invoice", "invoice_payment", "charge", "payment_intent", "refund",
            "dispute", "checkout.session")


def thin_target(event: dict[str, Any]) -> tuple[str, str] | None:
    """A thin event's related object as (kind, id), when it is a kind the mirror keeps."""
    related = event.get("related_object")
    if not isinstance(related, dict):
        return None
    kind, object_id = related.get("type"), related.get("id")
    if kind in MIRRORED and isinstance(object_id, str) and object_id:
        return kind, object_id
    return None


def snapshot(event: dict[str, Any]) -> dict[str, Any]:
    obj = (event.get("data") or {}).get("object") if isinstance(event.get("data"), dict) else None
    return obj if isinstance(obj, dict) else {}


def needs_line_items(event: dict[str, Any]) -> bool:
    obj = snapshot(event)
    if event.get("type") not in CREDIT_EVENTS or obj.get("mode") != "payment":
        return False
    if obj.get("payment_status") not in ("paid", "no_payment_required"):
        return False
    if str((obj.get("metadata") or {}).get("credits") or "").strip():
        return False
    return not ((obj.get("line_items") or {}).get("data"))


def wants(event: dict[str, Any], policy: EventPolicy) -> list[str]:
    """What to fetch for this event ([] for most)."""
    if problem(event) or policy.refusal(event) or "fetched" in annotations(event):
        return []
    if is_thin(event):
        return ["object"] if thin_target(event) else []
    found = []
    obj = snapshot(event)
    if not policy.understood(event) and obj.get("object") in RETRIEVABLE and obj.get("id"):
        found.append("object")
    if needs_line_items(event):
        found.append("line_items")
    return found


async def prepare(stripe, event: dict[str, Any], policy: EventPolicy) -> dict[str, Any]:
    """The event with what its handler needs fetched (see the module docstring)."""
    needed = wants(event, policy)
    if not needed:
        return event
    fetched: dict[str, Any] = {}
    notes = dict(annotations(event))
    try:
        if stripe is None or not stripe.configured:
            raise UpstreamError("Stripe is not configured (STRIPE_SECRET_KEY is missing)")
        if "object" in needed:
            kind, object_id = thin_target(event) if is_thin(event) else (snapshot(event)["object"],
                                                                         snapshot(event)["id"])
            fetched["object"] = await stripe.retrieve(kind, object_id)
            fetched["api_version"] = stripe.api_version
        if "line_items" in needed:
            fetched["line_items"] = await stripe.line_items(snapshot(event)["id"])
    except Exception as exc:  # UpstreamError says it in words; anything else by its kind
        notes["fetch_error"] = (str(exc).removesuffix("; nothing was changed") if isinstance(exc, UpstreamError)
                                else f"unexpected {type(exc).__name__}")
        log.warning("stripe event %s: could not fetch what it needs: %s", event.get("id"), notes["fetch_error"])
    else:
        notes["fetched"] = fetched
        notes.pop("fetch_error", None)
    return {**event, REVOPS: notes}


async def prepare_all(stripe, events: list[dict[str, Any]], policy: EventPolicy) -> list[dict[str, Any]]:
    return [await prepare(stripe, event, policy) for event in events]
