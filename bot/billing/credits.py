"""How many credits a paid Checkout Session grants (SPEC §2 `[credits.packs]`).

Only a `mode: payment` session grants credits (a subscription's checkout never does). In order:

    1. the session's `metadata.credits` (the whole purchase, as before);
    2. else each line item: `[credits.packs]` by its Price id, its Product id or its Price's
       lookup key, else its Price's `metadata.credits` — credits per unit, times the quantity.

The line items come from the payload when Stripe included them, else from fetch.py (fetched
before the transaction at the pinned version, Price and Product expanded).
"""

from __future__ import annotations

from typing import Any, Mapping

from .mirror import ref_id


def whole(raw: Any, what: str) -> int:
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 15 or int(text) <= 0:
        raise ValueError(f"{what} must be a positive whole number, got {text[:20]!r}")
    return int(text)


def per_unit(item: dict[str, Any], packs: Mapping[str, int]) -> tuple[int, str] | None:
    """A line item's credits per unit and what named them, or None when it is not a credit pack."""
    price = item.get("price") if isinstance(item.get("price"), dict) else {"id": ref_id(item.get("price"))}
    price_id, product_id = price.get("id"), ref_id(price.get("product"))
    lookup_key = price.get("lookup_key")
    for name in (price_id, product_id, lookup_key):
        if name and name in packs:
            return int(packs[name]), str(name)
    raw = (price.get("metadata") or {}).get("credits")
    if raw not in (None, ""):
        return whole(raw, f"price {price_id} metadata.credits"), f"{price_id} metadata.credits"
    return None


def pack_credits(session: dict[str, Any], line_items: list[dict[str, Any]] | None,
                 packs: Mapping[str, int]) -> tuple[int | None, str]:
    """(credits, how they were counted) — or (None, why it is not a credit pack)."""
    session_id = session.get("id")
    if session.get("mode") != "payment":
        return None, f"a {session.get('mode') or 'unknown'}-mode session; only payment-mode sessions grant credits"
    raw = (session.get("metadata") or {}).get("credits")
    if raw not in (None, "") and str(raw).strip():
        return whole(raw, f"checkout {session_id}: metadata.credits"), ""
    if line_items is None:
        return None, "not a credit-pack purchase (no metadata.credits, and its line items were not fetched)"
    total, parts = 0, []
    for item in line_items:
        found = per_unit(item, packs)
        if found is None:
            continue
        credits, named = found
        quantity = int(item.get("quantity") or 1)
        total += credits * quantity
        parts.append(f"{quantity} × {named}")
    if not total:
        return None, "not a credit-pack purchase (no metadata.credits, and no line item is in [credits.packs] " \
                     "or has metadata.credits on its Price)"
    return total, ": " + ", ".join(parts)
