"""The Stripe gateway: async calls through the official `stripe` package (its StripeClient
with the httpx async client), `STRIPE_API_BASE` honoured, every call at the pinned
`STRIPE_API_VERSION` (policy.py), network retries set explicitly, and a time budget per call
so a Slack answer still arrives when Stripe hangs.

Every failure becomes `UpstreamError` with one sentence for the person who asked
("Stripe is unreachable (connection refused); nothing was changed"); a missing object is
`None` (retrieve) so callers decide what "not found" means. Results are plain dicts.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Awaitable, Callable, TypeVar

import httpx
import stripe

from bot.db import assert_no_write_transaction
from bot.errors import UpstreamError, exception_chain

log = logging.getLogger("revops.stripe")

T = TypeVar("T")

# One retry for network errors and 409/5xx answers (stripe's backoff: 0.5–1 s), a 3 s connect
# timeout, 10 s per request, and 12 s for the whole call including retries.
MAX_NETWORK_RETRIES = 1
CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 10.0
CALL_BUDGET = 12.0
# Listing more than this many objects in one command is refused rather than left running.
MAX_LISTED = 20_000

# What `retrieve` fetches, by the object's `object` name: the client's service for it.
RETRIEVABLE = {"customer": "customers", "subscription": "subscriptions", "invoice": "invoices", "event": "events",
               "charge": "charges", "payment_intent": "payment_intents", "refund": "refunds",
               "dispute": "disputes", "invoice_payment": "invoice_payments", "checkout.session": "checkout.sessions"}
# The kinds `list` and `page` read (their service on `client.v1`).
# An invoice's payments with each PaymentIntent expanded (the invoice view's "last error").
PAYMENTS_EXPANDED = "payments.data.payment.payment_intent"
LISTED = {kind: RETRIEVABLE[kind] for kind in ("customer", "subscription", "invoice", "event")}


async def _collect(page: Any, max_items: int) -> list[dict[str, Any]]:
    """Every item of a listing, following Stripe's pages, at most `max_items`."""
    out: list[dict[str, Any]] = []
    async for item in page.auto_paging_iter():
        out.append(item.to_dict())
        if len(out) >= max_items:
            break
    return out


class StripeClient:
    def __init__(self, api_key: str | None, *, api_base: str | None = None, api_version: str | None = None,
                 max_network_retries: int = MAX_NETWORK_RETRIES, connect_timeout: float = CONNECT_TIMEOUT,
                 request_timeout: float = REQUEST_TIMEOUT, call_budget: float = CALL_BUDGET):
        self.api_key = api_key
        self.api_base = (api_base or stripe.DEFAULT_API_BASE).rstrip("/")
        self.api_version = api_version or stripe.api_version
        self.max_network_retries = max_network_retries
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.call_budget = call_budget
        self._client: stripe.StripeClient | None = None
        self._http: stripe.HTTPXClient | None = None

    @classmethod
    def from_settings(cls, settings) -> "StripeClient":
        env = settings.env
        key = env.stripe_secret_key.get_secret_value() if env.stripe_secret_key is not None else None
        return cls(key, api_base=env.stripe_api_base, api_version=env.stripe_api_version)

    @property
    def configured(self) -> bool:
        return bool(self.api_key)

    def _stripe(self) -> stripe.StripeClient:
        if not self.api_key:
            raise UpstreamError("Stripe is not configured (STRIPE_SECRET_KEY is missing); nothing was changed")
        if self._client is None:
            # Created on first use, inside the event loop that will use it.
            self._http = stripe.HTTPXClient(timeout=httpx.Timeout(self.request_timeout, connect=self.connect_timeout))
            self._client = stripe.StripeClient(
                self.api_key,
                base_addresses={"api": self.api_base},
                stripe_version=self.api_version,
                max_network_retries=self.max_network_retries,
                http_client=self._http,
            )
        return self._client

    async def aclose(self) -> None:
        if self._http is not None:
            try:
                await self._http.close_async()
            except Exception:  # closing is best effort
                pass
        self._client = self._http = None

    async def _call(self, what: str, fn: Callable[[stripe.StripeClient], Awaitable[T]]) -> T:
        assert_no_write_transaction(f"Stripe call ({what})")
        client = self._stripe()
        try:
            return await asyncio.wait_for(fn(client), timeout=self.call_budget)
        except asyncio.TimeoutError:
            raise UpstreamError(
                f"Stripe did not answer within {self.call_budget:g} s ({what}); nothing was changed") from None
        except stripe.StripeError as exc:
            raise UpstreamError(describe_stripe_error(exc)) from exc

    # -- reads ------------------------------------------------------------------------------------

    async def retrieve(self, kind: str, object_id: str) -> dict[str, Any] | None:
        """One object of a kind in RETRIEVABLE (its `object` name); None when Stripe has none."""
        path = RETRIEVABLE[kind]

        async def go(client: stripe.StripeClient):
            try:
                service: Any = client.v1
                for part in path.split("."):
                    service = getattr(service, part)
                obj = await service.retrieve_async(object_id)
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404:
                    return None
                raise
            return obj.to_dict()

        return await self._call(f"fetching {object_id}", go)

    async def list(self, kind: str, *, limit: int = 100, max_items: int = MAX_LISTED,
                   **params: Any) -> list[dict[str, Any]]:
        """Every object of a kind matching the filters, auto-paginated (at most `max_items`)."""
        service = LISTED[kind]

        async def go(client: stripe.StripeClient):
            page = await getattr(client.v1, service).list_async(params={"limit": limit, **params})
            return await _collect(page, max_items)

        return await self._call(f"listing {service}", go)

    async def page(self, kind: str, *, limit: int = 10, **params: Any) -> list[dict[str, Any]]:
        """The first page only (recent invoices and the like)."""
        service = LISTED[kind]

        async def go(client: stripe.StripeClient):
            page = await getattr(client.v1, service).list_async(params={"limit": limit, **params})
            return [item.to_dict() for item in page.data]

        return await self._call(f"listing {service}", go)

    async def line_items(self, session_id: str, max_items: int = 100) -> list[dict[str, Any]]:
        """A Checkout Session's line items, each with its Price (and the Price's Product) expanded."""

        async def go(client: stripe.StripeClient):
            page = await client.v1.checkout.sessions.line_items.list_async(
                session_id, params={"limit": 100, "expand": ["data.price.product"]})
            return await _collect(page, max_items)

        return await self._call(f"fetching the line items of {session_id}", go)

    async def webhook_endpoints(self) -> list[dict[str, Any]]:
        """The account's webhook endpoints (their url, status and api_version)."""

        async def go(client: stripe.StripeClient):
            page = await client.v1.webhook_endpoints.list_async(params={"limit": 100})
            return [item.to_dict() for item in page.data]

        return await self._call("listing webhook endpoints", go)

    async def customers_by_email(self, email: str) -> list[dict[str, Any]]:
        return await self.list("customer", email=email, max_items=20)

    async def events_between(self, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
        created: dict[str, int] = {"gte": int(since.timestamp())}
        if until is not None:
            created["lte"] = int(until.timestamp())
        return await self.list("event", created=created)

    # -- invoice actions (issue 18): each sends an idempotency key; Stripe's refusal in words ------

    async def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        """The invoice with its payments' PaymentIntents (and their last error) expanded — since
        2025-03-31.basil an invoice reaches its PaymentIntent through `payments` (invoice_payment
        objects); None when Stripe has no such invoice."""

        async def go(client: stripe.StripeClient):
            try:
                obj = await client.v1.invoices.retrieve_async(invoice_id, params={"expand": [PAYMENTS_EXPANDED]})
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404:
                    return None
                raise
            return obj.to_dict()

        return await self._call(f"fetching {invoice_id}", go)

    async def invoice_action(self, action: str, invoice_id: str, *, idempotency_key: str) -> dict[str, Any]:
        """`pay` (retry the payment), `mark_paid` (pay with paid_out_of_band), `send` (send_invoice)
        or `void` (void_invoice); the invoice as Stripe answers. A refusal (card declined, already
        paid, not open…) is `StripeRefused` with Stripe's own sentence."""
        options: Any = {"idempotency_key": idempotency_key}

        async def go(client: stripe.StripeClient):
            invoices = client.v1.invoices
            try:
                if action == "pay":
                    obj = await invoices.pay_async(invoice_id, options=options)
                elif action == "mark_paid":
                    obj = await invoices.pay_async(invoice_id, params={"paid_out_of_band": True}, options=options)
                elif action == "send":
                    obj = await invoices.send_invoice_async(invoice_id, options=options)
                elif action == "void":
                    obj = await invoices.void_invoice_async(invoice_id, options=options)
                else:
                    raise ValueError(f"unknown invoice action {action!r}")
            except (stripe.CardError, stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
                raise StripeRefused(describe_refusal(exc)) from exc
            return obj.to_dict()

        return await self._call(f"{action} {invoice_id}", go)

    async def ping(self) -> None:
        """A cheap authenticated call (health checks)."""
        await self.page("customer", limit=1)


class StripeRefused(UpstreamError):
    """Stripe answered and said no (card declined, invoice already paid…): nothing happened."""


def describe_refusal(exc: stripe.StripeError) -> str:
    """Stripe's refusal of an invoice action, in words (its own message, its code)."""
    message = (getattr(exc, "user_message", None) or "").strip().rstrip(".")[:200]
    code = getattr(exc, "code", None)
    error = getattr(exc, "error", None)  # the answer's `error` object (decline_code lives there)
    decline = getattr(error, "decline_code", None) if isinstance(exc, stripe.CardError) and error else None
    what = "Stripe declined the payment" if isinstance(exc, stripe.CardError) else "Stripe refused"
    detail = ", ".join(x for x in (code, decline) if x)
    return f"{what}: {message or type(exc).__name__}" + (f" ({detail})" if detail else "")


def describe_stripe_error(exc: stripe.StripeError) -> str:
    """One sentence, no secrets, no traceback."""
    if isinstance(exc, stripe.APIConnectionError):
        return f"Stripe is unreachable ({_network_cause(exc)}); nothing was changed"
    if isinstance(exc, stripe.AuthenticationError):
        return "Stripe refused the API key (authentication failed); nothing was changed"
    if isinstance(exc, stripe.PermissionError):
        return "Stripe refused the request (the API key lacks permission); nothing was changed"
    if isinstance(exc, stripe.RateLimitError):
        return "Stripe is rate-limiting us (HTTP 429); nothing was changed — try again in a minute"
    status = getattr(exc, "http_status", None)
    message = getattr(exc, "user_message", None) or ""
    message = message.strip().rstrip(".")[:200]
    detail = f"HTTP {status}" + (f": {message}" if message else "") if status else (message or type(exc).__name__)
    return f"Stripe answered with an error ({detail}); nothing was changed"


def _network_cause(exc: BaseException) -> str:
    """What went wrong on the wire, from the exception chain (httpx -> httpcore -> OSError)."""
    chain = exception_chain(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, (httpx.TimeoutException, TimeoutError)) for e in chain):
        return "timed out"
    if any(isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError, ConnectionResetError)) for e in chain):
        return "the connection was closed"
    text = " ".join(str(e).lower() for e in chain)
    if "name or service" in text or "nodename" in text or "resolve" in text:
        return "its address does not resolve"
    if "refused" in text:
        return "connection refused"
    if any(isinstance(e, httpx.ConnectError) for e in chain):
        return "cannot connect"
    return "network error"
