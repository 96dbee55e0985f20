"""The worker's HTTP port: /metrics (Prometheus), /healthz (alive: the main loop turns) and
/readyz (ready: models warmed, partitions assigned, broker answering)."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streaming.observability.threads import named_thread

Check = Callable[[], tuple[bool, dict[str, object]]]


def serve(
    port: int,
    registry: CollectorRegistry,
    healthz: Check,
    readyz: Check,
    host: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come over the pod network
) -> ThreadingHTTPServer:
    """Start the server in a daemon thread and return it (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = (healthz if path == "/healthz" else readyz)()
                body = json.dumps({"ok": ok, **detail}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None  # probes every few seconds would flood the logs

    server = ThreadingHTTPServer((host, port), Handler)
    named_thread(server.serve_forever, "http").start()
    return server
