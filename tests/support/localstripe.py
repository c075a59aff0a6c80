"""A real localstripe server (PyPI `localstripe`) on a free loopback port, for the billing tests.

localstripe keeps its data in memory (we start it with --from-scratch), sends webhooks to the
URLs registered with `POST /_config/webhooks/{id}` one second after each change, signed as
Stripe signs them. It knows Plans but not Prices, has no Checkout, and does not emit
`customer.subscription.updated`: those are covered by signed synthetic events (`make_event`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import stripe

from bot.billing.webhooks import sign_payload

from .net import free_port

API_KEY = "sk_test_revops_1234567890abcdef"


class LocalStripe:
    def __init__(self, api_key: str = API_KEY):
        self.api_key = api_key
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self._log = None

    def start(self, timeout: float = 20) -> "LocalStripe":
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = shutil.which("localstripe")
        cmd = [exe] if exe else [sys.executable, "-m", "localstripe"]
        self._log = tempfile.NamedTemporaryFile(prefix="localstripe-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd + ["--port", str(self.port), "--from-scratch"], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localstripe exited at start: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/customers", auth=(self.api_key, ""), timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("localstripe did not start in time")

    def log_tail(self, n: int = 2000) -> str:
        if not self._log:
            return ""
        try:
            with open(self._log.name) as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """Stop it abruptly, as a crash would (SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        if self._log:
            self._log.close()
            os.unlink(self._log.name)
            self._log = None

    # -- configuration --------------------------------------------------------------------------

    def register_webhook(self, url: str, secret: str, hook_id: str = "revops", events: list[str] | None = None):
        data: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            data["events"] = events
        r = httpx.post(f"{self.url}/_config/webhooks/{hook_id}", data=data, timeout=5)
        r.raise_for_status()

    def mute_webhook(self, hook_id: str = "revops") -> None:
        """Point the webhook at a closed port: events are created but never delivered."""
        self.register_webhook(f"http://127.0.0.1:{free_port()}/closed", "whsec_unused", hook_id)

    # -- the Stripe API, through plain HTTP -----------------------------------------------------

    def api(self, method: str, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        r = httpx.request(method, f"{self.url}/v1/{path}", auth=(self.api_key, ""), timeout=10,
                          data=_flatten(data or {}) if method != "GET" else None,
                          params=_flatten(data or {}) if method == "GET" else None)
        if r.status_code >= 400:
            raise RuntimeError(f"localstripe {method} {path}: {r.status_code} {r.text[:300]}")
        return r.json()

    def create_plan(self, plan_id: str = "pro-monthly", amount: int = 2000) -> dict[str, Any]:
        product = self.api("POST", "products", {"name": f"Product {plan_id}"})
        return self.api("POST", "plans", {"id": plan_id, "product": product["id"], "amount": amount,
                                          "currency": "usd", "interval": "month"})

    def create_customer(self, email: str, name: str = "Test Customer", user_id: str | None = None,
                        card: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"email": email, "name": name}
        if user_id:
            data["metadata"] = {"user_id": user_id}
        customer = self.api("POST", "customers", data)
        if card:
            pm = self.api("POST", "payment_methods", {"type": "card", "card": {
                "number": "4242424242424242", "exp_month": "12", "exp_year": "2030", "cvc": "123"}})
            self.api("POST", f"payment_methods/{pm['id']}/attach", {"customer": customer["id"]})
            self.api("POST", f"customers/{customer['id']}",
                     {"invoice_settings": {"default_payment_method": pm["id"]}})
        return customer

    def create_subscription(self, customer_id: str, plan_id: str = "pro-monthly") -> dict[str, Any]:
        return self.api("POST", "subscriptions", {"customer": customer_id, "items": [{"plan": plan_id}]})

    def cancel_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self.api("DELETE", f"subscriptions/{subscription_id}")

    def events(self, **params) -> list[dict[str, Any]]:
        out, after = [], None
        while True:
            query = {"limit": 100, **params}
            if after:
                query["starting_after"] = after
            page = self.api("GET", "events", query)
            out += page["data"]
            if not page["has_more"]:
                return out
            after = page["data"][-1]["id"]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Stripe's form encoding: a[b][0][c]=v."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    out.update(_flatten(item, f"{name}[{i}]"))
                else:
                    out[f"{name}[{i}]"] = str(item)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif value is not None:
            out[name] = str(value)
    return out


def make_event(event_type: str, obj: dict[str, Any], *, created: int | None = None,
               event_id: str | None = None, api_version: str | None = stripe.api_version,
               **fields: Any) -> dict[str, Any]:
    """A Stripe event as Stripe sends it today (for types localstripe cannot produce): rendered at
    the pinned API version unless told otherwise; `fields` adds top-level keys (account, livemode…)."""
    event = {
        "id": event_id or f"evt_syn{uuid.uuid4().hex[:20]}",
        "object": "event",
        "api_version": api_version,
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }
    event.update(fields)
    return event


def signed_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"Stripe-Signature": sign_payload(secret, body, ts), "Content-Type": "application/json"}


def post_event(http: httpx.Client, secret: str, event: dict[str, Any] | str, *,
               timestamp: int | None = None) -> httpx.Response:
    body = event if isinstance(event, str) else json.dumps(event)
    return http.post("/webhooks/stripe", content=body, headers=signed_headers(secret, body, timestamp))


class StripeFront:
    """A loopback front for localstripe: the routes localstripe does not have (Checkout line items,
    webhook endpoints, PaymentIntents in today's shape…) answered from canned objects the test sets
    in Stripe's current shapes, every other request passed through to localstripe unchanged. The
    bot's STRIPE_API_BASE points here; `requests` records (method, path, Stripe-Version) of each."""

    def __init__(self, localstripe_url: str):
        self.upstream = localstripe_url
        self.canned: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                outer.requests.append((self.command, path, self.headers.get("Stripe-Version")))
                if (self.command, path) in outer.canned:
                    status, payload = outer.canned[(self.command, path)]
                    data = json.dumps(payload).encode()
                    content_type = "application/json"
                else:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    r = httpx.request(self.command, outer.upstream + self.path, content=body, headers=headers,
                                      timeout=10)
                    status, data, content_type = r.status_code, r.content, r.headers.get("content-type",
                                                                                          "application/json")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "StripeFront":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve(self, method: str, path: str, payload: dict[str, Any], status: int = 200) -> None:
        self.canned[(method, path)] = (status, payload)

    def serve_list(self, path: str, items: list[dict[str, Any]]) -> None:
        self.serve("GET", path, {"object": "list", "url": path, "has_more": False, "data": items})
