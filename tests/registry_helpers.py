"""The Schema Registry the format tests talk to: the dev registry, or any Confluent-compatible
one named by STREAMING_TEST_SCHEMA_REGISTRY_URL. Tests use it only through confluent-kafka's
real SchemaRegistryClient (and the worker's own client)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streaming.dev.registry import DevRegistry

ENV_TEST_REGISTRY = "STREAMING_TEST_SCHEMA_REGISTRY_URL"
ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def registry_url() -> Iterator[str]:
    """The URL of a registry for one test (a fresh dev registry unless the env names one)."""
    external = os.environ.get(ENV_TEST_REGISTRY)
    if external:
        yield external
        return
    registry = DevRegistry().start()
    try:
        yield registry.url
    finally:
        registry.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RegistryProcess:
    """``streaming registry`` as a child process that a test stops and starts again (same port,
    same state file), as an operator's restart would."""

    def __init__(self, port: int, state: Path, log: Path) -> None:
        self.port, self.state, self.log = port, state, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> RegistryProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "streaming", "registry"),
                    *("--port", str(self.port), "--state", str(self.state)),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/subjects", timeout=1):  # noqa: S310
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.log.read_text()) from None
                time.sleep(0.05)
        raise AssertionError(f"registry not up in {timeout} s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
