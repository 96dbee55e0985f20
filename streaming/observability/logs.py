"""Structured JSON logs, one object per line, with the worker id on every line.

Raw event values are never logged: they may carry card data.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "worker": self.worker,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def trace_id(headers: list[tuple[str, bytes]] | None) -> str | None:
    """The W3C trace id of an event's ``traceparent`` header (version-traceid-spanid-flags)."""
    for key, value in headers or ():
        if key == "traceparent" and value:
            parts = value.decode("ascii", "replace").split("-")
            if len(parts) == 4 and len(parts[1]) == 32:
                return parts[1]
    return None


class LogBudget:
    """At most ``per_second`` lines of one kind per second; the rest are counted, and the
    count is reported on the next line that gets through (a flood of bad events must not
    become a flood of logs). Shared by the threads that log that kind, so it takes a lock."""

    def __init__(self, per_second: int = 20) -> None:
        self.per_second = per_second
        self._lock = threading.Lock()
        self._second = 0
        self._used = 0
        self._suppressed = 0

    def take(self) -> int | None:
        """None when over budget; else how many lines were suppressed since the last one."""
        now = int(time.monotonic())
        with self._lock:
            if now != self._second:
                self._second, self._used = now, 0
            if self._used >= self.per_second:
                self._suppressed += 1
                return None
            self._used += 1
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed


def setup_logging(worker: str, level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(worker))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
