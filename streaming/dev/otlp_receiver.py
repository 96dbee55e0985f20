"""A small OTLP/HTTP trace receiver for tests and development (no collector can run here).

It accepts real OTLP/HTTP protobuf export requests on ``POST /v1/traces``, decodes them with
``opentelemetry-proto`` and keeps the spans in memory, flattened. It can be told to answer
slowly or with an error, to play a collector that is slow or down.

    with OtlpReceiver() as rx:            # 127.0.0.1, a free port
        cfg.tracing.endpoint = rx.endpoint
        ...
        rx.wait_for(lambda spans: len(spans) >= 10, timeout=10)

Threads: the server's request threads append under one lock; readers get a copy.
"""

from __future__ import annotations

import gzip
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the collector saw it (ids in lowercase hex, as in a traceparent)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    kind: int
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    """(trace id, span id) of each link."""
    resource: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def _count(body: bytes) -> int:
    """How many spans one ExportTraceServiceRequest carries (parsed, not flattened)."""
    req = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def decode_request(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ExportTraceServiceRequest (protobuf bytes)."""
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        kind=s.kind,
                        attributes={kv.key: _value(kv.value) for kv in s.attributes},
                        links=[(ln.trace_id.hex(), ln.span_id.hex()) for ln in s.links],
                        resource=resource,
                        status_code=s.status.code,
                    )
                )
    return out


class OtlpReceiver:
    """An OTLP/HTTP (protobuf) endpoint on loopback that keeps what it is sent."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        forward_to: str | None = None,
        keep: bool = True,
    ) -> None:
        self.forward_to = forward_to
        self.keep = keep
        """Keep the spans, decoded (tests); false: only count them (benchmarks, where this
        process stands for a collector on another machine and shares the worker's cores)."""
        self.count = 0
        """Spans received so far."""
        """A real collector's OTLP/HTTP base URL: every request received is sent on there as
        it came (tests that want a look in a real tracing UI set OTLP_TEST_ENDPOINT)."""
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.requests = 0
        self.delay_s = 0.0
        """Answer each request this late (a slow collector)."""
        self.status = 200
        """Answer with this status (503: a collector that refuses)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status = receiver.status
                if self.path.rstrip("/") != "/v1/traces":
                    status = 404
                if status == 200:
                    receiver._add(decode_request(body) if receiver.keep else _count(body))
                    if receiver.forward_to:
                        _forward(receiver.forward_to, body)
                payload = ExportTraceServiceResponse().SerializeToString()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the exporter gave up waiting (a slow collector is what was asked)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests and the demo read their own output

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The base URL to give ``tracing.endpoint`` (the exporter adds /v1/traces)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _add(self, spans: list[ReceivedSpan] | int) -> None:
        with self._changed:
            self.requests += 1
            if isinstance(spans, int):
                self.count += spans
            else:
                self.count += len(spans)
                self._spans.extend(spans)
            self._changed.notify_all()

    @property
    def spans(self) -> list[ReceivedSpan]:
        """A copy of every span received so far."""
        with self._lock:
            return list(self._spans)

    def wait_for(self, done: Callable[[list[ReceivedSpan]], bool], timeout: float) -> bool:
        """Wait until ``done(spans)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self._spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def start(self) -> OtlpReceiver:
        """Serve on a thread of its own."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving (and free the port, started or not)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _forward(base_url: str, body: bytes) -> None:
    url = base_url.rstrip("/") + "/v1/traces"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"OTLP_TEST_ENDPOINT must be an http(s) URL, got {base_url!r}")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=body, headers={"Content-Type": "application/x-protobuf"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        answer.read()


def main() -> None:
    """Serve until SIGTERM or Ctrl-C, printing one line per span received (development)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument(
        "--quiet", action="store_true", help="print only the span count, every 5 s (benchmarks)"
    )
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    seen = 0
    with OtlpReceiver(port=args.port, keep=not args.quiet) as rx:
        print(f"OTLP/HTTP receiver on {rx.endpoint}/v1/traces", flush=True)
        try:
            while not stop.wait(5.0 if args.quiet else 0.5):
                if args.quiet:
                    print(f"{rx.count:,} spans received", flush=True)
                    continue
                spans = rx.spans
                for s in spans[seen:]:
                    print(
                        f"{s.trace_id} {s.span_id} <- {s.parent_span_id or '-':16} "
                        f"{s.name:16} {s.duration_ns / 1e6:9.3f} ms",
                        flush=True,
                    )
                seen = len(spans)
        except KeyboardInterrupt:
            pass
        if args.quiet:
            print(f"{rx.count:,} spans received", flush=True)


if __name__ == "__main__":
    main()
