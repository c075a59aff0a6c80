"""A loopback HTTP server that accepts every request and answers none until the test releases it
(a hung Stripe); once released, it answers each one, held or new, with Stripe's 404."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOT_FOUND = json.dumps({"error": {"type": "invalid_request_error", "code": "resource_missing",
                                  "message": "No such object"}}).encode()


class HungServer:
    def __init__(self):
        self.released = threading.Event()
        self.requested = threading.Event()  # set once a request is being held
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _hold_then_404(self):
                outer.paths.append(self.path)
                outer.requested.set()
                outer.released.wait(120)
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(NOT_FOUND)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(NOT_FOUND)

            do_GET = do_POST = do_DELETE = _hold_then_404

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "HungServer":
        self.thread.start()
        return self

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
