"""Writer schemas by id from a Confluent-compatible Schema Registry, fetched once and cached.

An id the registry does not know is an answer (the event goes to the dead letters). A registry
that cannot be reached is not: the fetch is retried with backoff until it answers, so the
feeding thread waits and nothing new is polled (partitions pause rather than buffer), and no
valid event is dead-lettered because the infrastructure failed.

Threads: one ``SchemaSource`` per decoder, used only by the engine's feeding thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streaming.config import SchemaRegistryConfig
from streaming.errors import StartupError
from streaming.formats.errors import DecodeDeferred
from streaming.kafka.secrets import REGISTRY_USER_INFO, SecretsError, registry_user_info

log = logging.getLogger("streaming.formats")

_BACKOFF_FIRST_S = 0.1
_BACKOFF_MAX_S = 5.0
_NOT_FOUND_TTL_S = 10.0
"""An unknown id is asked again after this long (it may be registered late), not per event."""


def registry_client(cfg: SchemaRegistryConfig, secrets_dir: str | None) -> SchemaRegistryClient:
    """A client for ``cfg.url`` with the credentials from the secrets directory, if any."""
    conf: dict[str, Any] = {"url": cfg.url, "timeout": cfg.timeout_s, "max.retries": 0}
    try:
        user_info = registry_user_info(secrets_dir)
    except (SecretsError, OSError) as exc:
        raise StartupError(f"schema registry credentials: {exc}") from None
    if user_info is not None:
        conf["basic.auth.user.info"] = user_info
    return SchemaRegistryClient(conf)


def check_reachable(client: SchemaRegistryClient, url: str) -> None:
    """StartupError (exit 2) with the fix when the registry does not answer at start."""
    try:
        client.get_subjects()
    except SchemaRegistryError as exc:
        if exc.http_status_code in (401, 403):
            raise StartupError(
                f"schema registry {url} refused the credentials ({exc.http_status_code}): put "
                f"user:password in the file {REGISTRY_USER_INFO} in kafka.secrets_dir"
            ) from None
        raise StartupError(
            f"schema registry {url} answered {exc}; check schema_registry.url"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any transport failure means the same fix
        raise StartupError(
            f"schema registry {url} is unreachable ({type(exc).__name__}: {exc}); start it "
            "(for development: streaming registry --port 8081) or fix schema_registry.url / "
            "STREAMING_SCHEMA_REGISTRY_URL"
        ) from None


class SchemaSource:
    """Writer schemas by id: cached for good once found, retried while the registry is down."""

    def __init__(
        self,
        client: SchemaRegistryClient,
        url: str,
        should_stop: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._url = url
        self._should_stop = should_stop or (lambda: False)
        self._sleep = sleep
        self._missing: dict[int, float] = {}
        self.outages = 0
        """Fetches that found the registry unreachable (each retried until it answered)."""

    def close(self) -> None:
        """Close the client's connections (the engine's close)."""
        self._client.close()

    def get(self, schema_id: int) -> Schema | None:
        """The schema registered as ``schema_id``, or None when the registry does not know it.

        Raises DecodeDeferred when the worker stops while the registry is unreachable.
        """
        missing_since = self._missing.get(schema_id)
        if missing_since is not None and time.monotonic() - missing_since < _NOT_FOUND_TTL_S:
            return None
        wait = _BACKOFF_FIRST_S
        first_failure: float | None = None
        while True:
            try:
                schema = self._client.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    self._missing[schema_id] = time.monotonic()
                    return None
                problem = f"answered {exc.http_status_code}: {exc.error_message}"
            except Exception as exc:  # noqa: BLE001 - transport errors of httpx/httpx2 alike
                problem = f"unreachable ({type(exc).__name__}: {exc})"
            else:
                self._missing.pop(schema_id, None)
                if first_failure is not None:
                    log.warning(
                        "schema registry answered again after %.1f s: schema id %d fetched",
                        time.monotonic() - first_failure,
                        schema_id,
                    )
                return schema
            if first_failure is None:
                first_failure = time.monotonic()
                self.outages += 1
            log.warning(
                "schema registry %s %s fetching schema id %d; retrying in %.1f s (no new "
                "events are read meanwhile, none is dead-lettered for this)",
                self._url,
                problem,
                schema_id,
                wait,
            )
            if self._should_stop():
                raise DecodeDeferred(f"stopping while schema registry {self._url} is {problem}")
            self._sleep(wait)
            wait = min(wait * 2, _BACKOFF_MAX_S)
