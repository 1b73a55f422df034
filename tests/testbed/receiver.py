"""A real HTTP receiver for webhook notes: checks each body's HMAC-SHA256 signature and keeps what it accepted.

It answers 401 to a body whose `X-Orch-Signature` does not match the shared secret, 200 otherwise, and counts a
note once per `key` however often it arrives (what a receiver of at-least-once deliveries does). `fail_next`
makes it answer 503 a number of times, as a receiver that is down would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Receiver:
    secret: str
    server: ThreadingHTTPServer
    notes: dict = field(default_factory=dict)  # key -> body of the first accepted delivery
    deliveries: list = field(default_factory=list)  # (status, key) of every request
    fail_next: int = 0

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/orch"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_receiver(secret: str) -> Receiver:
    """Start a receiver on a free loopback port (a thread of this process); stop it with `.stop()`."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's handler naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
            if receiver.fail_next > 0:
                receiver.fail_next -= 1
                status = 503
            elif not hmac.compare_digest(expected, self.headers.get("X-Orch-Signature", "")):
                status = 401
            else:
                status = 200
                note = json.loads(body)
                receiver.notes.setdefault(note["key"], note)
            receiver.deliveries.append((status, self.headers.get("Idempotency-Key")))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(secret=secret, server=server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver
