"""The demo's own webhook receiver: a tiny HTTP server on 127.0.0.1 (a random port, in the
demo's process) standing in for every merchant's endpoint. It checks each alert's Standard
Webhooks signature with that merchant's secret, answers 204 (or 401 for a bad signature) and
prints one line per alert."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks import Webhook, WebhookVerificationError

from worker.alerts.webhooks import new_secret

ALLOW_LOOPBACK = "127.0.0.1"
"""SLATIMER_WEBHOOK_ALLOW for the demo's runtime only: lets alerts go to this receiver over
http on the loopback address, which delivery refuses otherwise."""


class Receiver:
    """Endpoints for `merchants` at http://127.0.0.1:PORT/<merchant>, each with its own secret."""

    def __init__(self, merchants: list[str], out: Callable[[str], Any]) -> None:
        self.secrets = {merchant: new_secret() for merchant in merchants}
        self.verified = 0
        self.refused = 0
        self._out = out
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, merchant: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/{merchant}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def receive(self, merchant: str, body: bytes, headers: dict[str, str]) -> bool:
        """Verify one delivery; returns whether the signature is the merchant's."""
        secret = self.secrets.get(merchant)
        try:
            if secret is None:
                raise WebhookVerificationError("no such merchant")
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError as bad:
            with self._lock:
                self.refused += 1
            self._out(f"  alert to {merchant}: signature REFUSED ({bad})")
            return False
        data = orjson.loads(body)["data"]
        with self._lock:
            self.verified += 1
        self._out(
            f"  alert to {merchant:<11} {data['kind']:<10} {data['rule']:<31} "
            f"{data['order_id']:<9} signature ok"
        )
        return True

    def tally(self) -> str:
        line = (
            f"alerts received by the demo's webhook receiver: {self.verified} signed and verified"
        )
        return line + (f", {self.refused} refused" if self.refused else "")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {key.lower(): value for key, value in self.headers.items()}
            ok = receiver.receive(self.path.strip("/"), body, headers)
            self.send_response(204 if ok else 401)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            """Quiet: the receiver prints its own line per alert."""

    return Handler
