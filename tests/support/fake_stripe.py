"""A small Stripe stand-in on loopback for the invoice actions localstripe does not implement
(`send_invoice`, `pay` with `paid_out_of_band`, a declined retry, idempotent replays), answering in
today's shapes (API 2025-03-31.basil and later: an invoice reaches its PaymentIntent through
`payments.data[].payment`). It records every request with its Idempotency-Key and, like Stripe,
answers a repeated key with the first answer."""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .server import LiveServer

NOW = int(time.time())


@dataclass
class StripeCall:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None


def invoice(iid: str, cid: str, *, status: str = "open", amount: int = 4900, attempts: int = 1,
            collection: str = "charge_automatically", due_days_ago: int | None = None, pi: str | None = None,
            error: str | None = None, created_days_ago: int = 3) -> dict[str, Any]:
    pi = pi or f"pi_{iid[3:]}"
    intent = {"id": pi, "object": "payment_intent", "amount": amount, "currency": "usd", "customer": cid,
              "status": "requires_payment_method" if error else "requires_confirmation",
              "last_payment_error": ({"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                                      "message": error} if error else None)}
    return {"id": iid, "object": "invoice", "customer": cid, "status": status, "currency": "usd",
            "amount_due": amount, "amount_paid": 0, "amount_remaining": amount, "attempt_count": attempts,
            "attempted": attempts > 0, "next_payment_attempt": NOW + 86400 if status == "open" else None,
            "created": NOW - created_days_ago * 86400, "collection_method": collection,
            "due_date": NOW - due_days_ago * 86400 if due_days_ago is not None else None,
            "billing_reason": "subscription_cycle", "livemode": False, "parent": None,
            "payments": {"object": "list", "has_more": False, "url": f"/v1/invoice_payments?invoice={iid}", "data": [
                {"id": f"inpay_{iid[3:]}", "object": "invoice_payment", "invoice": iid, "is_default": True,
                 "amount_paid": None, "amount_requested": amount, "currency": "usd", "created": NOW - 3600,
                 "status": "open", "payment": {"type": "payment_intent", "payment_intent": intent}}]},
            "lines": {"object": "list", "data": [], "has_more": False, "url": f"/v1/invoices/{iid}/lines"}}


def _error(status: int, kind: str, code: str, message: str, decline: str | None = None) -> JSONResponse:
    error = {"type": kind, "code": code, "message": message}
    if decline:
        error["decline_code"] = decline
    return JSONResponse({"error": error}, status_code=status)


class FakeStripe:
    def __init__(self):
        self._lock = threading.Lock()
        self.invoices: dict[str, dict[str, Any]] = {}
        self.declines: set[str] = set()  # invoices whose next pay is declined
        self.calls: list[StripeCall] = []
        self._answers: dict[str, tuple[int, Any]] = {}
        app = Starlette(routes=[
            Route("/v1/customers/{cid}", self._customer, methods=["GET"]),
            Route("/v1/subscriptions", self._empty_list, methods=["GET"]),
            Route("/v1/invoices", self._invoice_list, methods=["GET"]),
            Route("/v1/invoices/{iid}", self._get, methods=["GET"]),
            Route("/v1/invoices/{iid}/{verb}", self._post, methods=["POST"]),
        ])
        self.live = LiveServer(app)
        self.url = self.live.url

    def start(self) -> "FakeStripe":
        self.live.start()
        return self

    def stop(self) -> None:
        self.live.stop()

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.invoices[obj["id"]] = obj
        return obj

    def posts(self, verb: str | None = None) -> list[StripeCall]:
        with self._lock:
            return [c for c in self.calls if c.method == "POST" and (verb is None or c.path.endswith("/" + verb))]

    async def _customer(self, request: Request) -> JSONResponse:
        """A customer exists when one of the invoices names it (enough for the customer view)."""
        cid = request.path_params["cid"]
        with self._lock:
            self.calls.append(StripeCall("GET", request.url.path, dict(request.query_params), None))
            known = any(i.get("customer") == cid for i in self.invoices.values())
        if not known:
            return _error(404, "invalid_request_error", "resource_missing", f"No such customer: '{cid}'")
        return JSONResponse({"id": cid, "object": "customer", "email": f"{cid.lower()}@example.com",
                             "name": cid, "livemode": False, "metadata": {}})

    async def _empty_list(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [], "has_more": False, "url": request.url.path})

    async def _invoice_list(self, request: Request) -> JSONResponse:
        query = request.query_params
        customer, status = query.get("customer"), query.get("status")
        created = {op: int(query[f"created[{op}]"]) for op in ("gt", "gte", "lt", "lte") if f"created[{op}]" in query}
        bounds = {"gt": lambda c, v: c > v, "gte": lambda c, v: c >= v, "lt": lambda c, v: c < v,
                  "lte": lambda c, v: c <= v}
        with self._lock:
            self.calls.append(StripeCall("GET", request.url.path, dict(query), None))
            found = [copy.deepcopy(i) for i in self.invoices.values()
                     if (customer is None or i.get("customer") == customer)
                     and (status is None or i.get("status") == status)
                     and all(bounds[op](i.get("created", 0), v) for op, v in created.items())]
        found.sort(key=lambda i: i.get("created", 0), reverse=True)
        return JSONResponse({"object": "list", "data": found, "has_more": False, "url": "/v1/invoices"})

    async def _get(self, request: Request) -> JSONResponse:
        iid = request.path_params["iid"]
        with self._lock:
            self.calls.append(StripeCall("GET", request.url.path, dict(request.query_params), None))
            obj = self.invoices.get(iid)
        if obj is None:
            return _error(404, "invalid_request_error", "resource_missing", f"No such invoice: '{iid}'")
        return JSONResponse(obj)

    async def _post(self, request: Request) -> JSONResponse:
        iid, verb = request.path_params["iid"], request.path_params["verb"]
        params = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        key = request.headers.get("idempotency-key")
        with self._lock:
            self.calls.append(StripeCall("POST", request.url.path, params, key))
            if key and key in self._answers:  # Stripe replays the first answer to a repeated key
                status, body = self._answers[key]
                return JSONResponse(body, status_code=status, headers={"Idempotent-Replayed": "true"})
            response = self._act(iid, verb, params)
            if key:
                self._answers[key] = (response.status_code, json.loads(response.body))
            return response

    def _act(self, iid: str, verb: str, params: dict[str, str]) -> JSONResponse:
        obj = self.invoices.get(iid)
        if obj is None:
            return _error(404, "invalid_request_error", "resource_missing", f"No such invoice: '{iid}'")
        if obj["status"] not in ("open", "uncollectible"):
            code = "invoice_already_paid" if obj["status"] == "paid" else "invoice_not_open"
            return _error(400, "invalid_request_error", code, f"Invoice is already {obj['status']}.")
        if verb == "pay":
            if params.get("paid_out_of_band") == "true":
                self._paid(obj, out_of_band=True)
            elif iid in self.declines:
                self.declines.discard(iid)
                obj["attempt_count"] += 1
                intent = obj["payments"]["data"][0]["payment"]["payment_intent"]
                intent["last_payment_error"] = {"type": "card_error", "code": "card_declined",
                                                "decline_code": "insufficient_funds",
                                                "message": "Your card has insufficient funds."}
                return _error(402, "card_error", "card_declined", "Your card has insufficient funds.",
                              "insufficient_funds")
            else:
                obj["attempt_count"] += 1
                self._paid(obj)
        elif verb == "send":
            if obj["collection_method"] != "send_invoice":
                return _error(400, "invalid_request_error", "invoice_not_send_invoice",
                              "You can only send invoices with collection_method=send_invoice.")
        elif verb == "void":
            obj.update(status="void", amount_remaining=0, next_payment_attempt=None)
        else:
            return _error(404, "invalid_request_error", "unknown", f"Unrecognized request URL ({verb}).")
        return JSONResponse(copy.deepcopy(obj))

    @staticmethod
    def _paid(obj: dict[str, Any], out_of_band: bool = False) -> None:
        obj.update(status="paid", amount_paid=obj["amount_due"], amount_remaining=0, next_payment_attempt=None,
                   paid_out_of_band=out_of_band)
        if not out_of_band:
            intent = obj["payments"]["data"][0]["payment"]["payment_intent"]
            intent.update(status="succeeded", last_payment_error=None)
