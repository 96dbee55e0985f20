"""Sending encoded OTLP requests to a collector: OTLP/HTTP (protobuf) or gRPC.

The spans are encoded by streaming.tracing.otlp, not by the SDK, so the SDK's span exporters
(which take SDK span objects) cannot be fed as they are. gRPC uses the SDK's exporter all the
same (its channel, credentials, retries and ``OTEL_`` variables) through its request hook;
OTLP/HTTP is a POST, made here with the same ``OTEL_EXPORTER_OTLP_[TRACES_]*`` variables the
SDK reads (endpoint, headers, compression, certificates). Both are called only from the
``otlp-export`` thread, and return whether the collector took the request.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import time
import zlib
from typing import Any, Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from streaming.config import TracingConfig
from streaming.errors import StartupError

log = logging.getLogger("streaming.tracing")

RETRYABLE = frozenset((429, 502, 503, 504))
"""HTTP answers worth another try within the export timeout (as the SDK's exporter does)."""


class Sender(Protocol):
    endpoint: str

    def send(self, request: bytes) -> bool:
        """POST or call with one serialized ExportTraceServiceRequest: did the collector take it?"""
        ...

    def shutdown(self) -> None: ...


def _env(name: str, default: str | None = None) -> str | None:
    """``OTEL_EXPORTER_OTLP_TRACES_<name>``, else ``OTEL_EXPORTER_OTLP_<name>``."""
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")
        or default
    )


def make_sender(cfg: TracingConfig) -> Sender:
    """The sender for ``cfg`` (HTTP/protobuf or gRPC); unset keys fall to OTEL_* vars."""
    protocol = cfg.protocol or _env("PROTOCOL", "http/protobuf")
    if protocol == "grpc":
        return GrpcSender(cfg)
    if protocol != "http/protobuf":
        raise StartupError(
            f"OTLP protocol {protocol!r} (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL) is not "
            "supported: use http/protobuf or grpc, or set tracing.protocol"
        )
    return HttpSender(cfg)


def http_endpoint(cfg: TracingConfig) -> str:
    """tracing.endpoint (plus /v1/traces), else the signal's variable as it is, else the
    general one plus /v1/traces, else localhost (the SDK's order)."""
    if cfg.endpoint is not None:
        base = cfg.endpoint.rstrip("/")
        return base if base.endswith("/v1/traces") else base + "/v1/traces"
    signal = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if signal:
        return signal
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    return base.rstrip("/") + "/v1/traces"


class HttpSender:
    """POSTs each request (``application/x-protobuf``) on one kept-alive session."""

    def __init__(self, cfg: TracingConfig) -> None:
        import requests
        from opentelemetry.util.re import parse_env_headers

        self.endpoint = http_endpoint(cfg)
        self.timeout_s = cfg.export_timeout_s
        self.headers = {
            "Content-Type": "application/x-protobuf",
            **parse_env_headers(_env("HEADERS", "") or "", liberal=True),
        }
        self.compression = (_env("COMPRESSION", "none") or "none").lower()
        if self.compression not in ("none", "gzip", "deflate"):
            raise StartupError(
                f"OTLP compression {self.compression!r} (OTEL_EXPORTER_OTLP_[TRACES_]"
                "COMPRESSION) is not supported: use none, gzip or deflate"
            )
        if self.compression != "none":
            self.headers["Content-Encoding"] = self.compression
        certificate, key = _env("CLIENT_CERTIFICATE"), _env("CLIENT_KEY")
        self._cert: Any = (certificate, key) if certificate and key else certificate
        self._verify: Any = _env("CERTIFICATE") or True
        self._session = requests.Session()
        self._errors = (requests.RequestException,)

    def send(self, request: bytes) -> bool:
        body = request
        if self.compression == "gzip":
            body = gzip.compress(body)
        elif self.compression == "deflate":
            body = zlib.compress(body)
        deadline = time.monotonic() + self.timeout_s
        delay = 1.0
        while True:
            left = deadline - time.monotonic()
            try:
                answer = self._session.post(
                    self.endpoint,
                    data=body,
                    headers=self.headers,
                    timeout=max(left, 0.01),
                    verify=self._verify,
                    cert=self._cert,
                )
            except self._errors as exc:
                status, why = None, str(exc)
            else:
                if answer.ok:
                    return True
                status, why = answer.status_code, answer.reason
            pause = delay * random.uniform(0.8, 1.2)
            retry = status is None or status in RETRYABLE
            if not retry or pause > deadline - time.monotonic():
                log.warning("OTLP export to %s failed: %s %s", self.endpoint, status or "", why)
                return False
            time.sleep(pause)
            delay *= 2

    def shutdown(self) -> None:
        self._session.close()


class GrpcSender:
    """The SDK's gRPC span exporter, given requests already encoded."""

    def __init__(self, cfg: TracingConfig) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult

        class _Encoded(OTLPSpanExporter):
            # the mixin's translation hook: our requests are already what it sends
            def _translate_data(self, data: Any) -> Any:
                return data

            def _count_data(self, data: Any) -> int:
                return sum(len(ss.spans) for rs in data.resource_spans for ss in rs.scope_spans)

        self._exporter = _Encoded(endpoint=cfg.endpoint, timeout=cfg.export_timeout_s)
        self._ok = SpanExportResult.SUCCESS
        self.endpoint = cfg.endpoint or _env("ENDPOINT", "http://localhost:4317") or ""

    def send(self, request: bytes) -> bool:
        parsed = ExportTraceServiceRequest.FromString(request)
        return bool(self._exporter.export(parsed) == self._ok)  # type: ignore[arg-type]

    def shutdown(self) -> None:
        self._exporter.shutdown()
