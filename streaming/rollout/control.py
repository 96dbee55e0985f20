"""Routing changes through the control topic: compacted, key = model name, value = JSON.

    {"weights": {"v1": 90, "v2": 10}, "shadows": {"v3": 0.2}}

``weights`` are relative shares of live traffic (sticky by key); ``shadows`` are shares of
traffic also scored by a version whose results go to the shadow topic only. Every worker reads
the topic itself (no consumer group: each needs every record) and applies a valid record on
its next turn; an invalid one is refused with a logged reason and the weights in force stay.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streaming.config import PipelineConfig, format_validation_error
from streaming.engine.routing_rules import routing_problem
from streaming.kafka import settings as kafka

log = logging.getLogger("streaming.control")
worker_log = logging.getLogger("streaming.worker")


class RoutingUpdate(BaseModel):
    """One control record's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[str, float] = Field(min_length=1)
    shadows: dict[str, float] = Field(default_factory=dict)


class ControlError(ValueError):
    """A control record that cannot be applied; the message says why."""


def parse_update(value: bytes | None, versions: Iterable[str]) -> RoutingUpdate:
    """Validate a control value against the versions this worker has loaded."""
    if value is None:
        raise ControlError("empty value (a tombstone): keeping the weights in force")
    try:
        update = RoutingUpdate.model_validate_json(value)
    except ValidationError as exc:
        raise ControlError(format_validation_error("control record", exc)) from None
    problem = routing_problem(update.weights, update.shadows, versions)
    if problem:
        raise ControlError(problem)
    return update


@dataclass(frozen=True)
class ControlMessage:
    update: RoutingUpdate | None
    error: str | None
    produced_ms: int


class ControlReader:
    """Reads the control topic from its start, keeping only this model's records."""

    def __init__(self, cfg: PipelineConfig, client_id: str) -> None:
        self._model = cfg.model.name.encode()
        self._versions = [v.version for v in cfg.model.versions]
        self._consumer = Consumer(
            {
                **kafka.admin_settings(cfg.kafka),
                "group.id": f"control-{uuid.uuid4().hex[:8]}",  # required, never used to commit
                "client.id": f"{client_id}-control",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
            }
        )
        self._consumer.assign([TopicPartition(cfg.topics.control, 0, OFFSET_BEGINNING)])

    def poll(self, timeout: float = 0.0) -> list[ControlMessage]:
        out = []
        for msg in self._consumer.consume(num_messages=100, timeout=timeout):
            if msg.error() or msg.key() != self._model:
                continue
            ts = msg.timestamp()[1]
            try:
                out.append(ControlMessage(parse_update(msg.value(), self._versions), None, ts))
            except ControlError as exc:
                out.append(ControlMessage(None, str(exc), ts))
        return out

    def catch_up(self, quiet_s: float = 0.5, limit_s: float = 5.0) -> list[ControlMessage]:
        """Everything already on the topic (until it has been quiet for ``quiet_s``)."""
        out: list[ControlMessage] = []
        deadline = time.monotonic() + limit_s
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < quiet_s:
            got = self.poll(0.1)
            if got:
                out += got
                last = time.monotonic()
        return out

    def close(self) -> None:
        self._consumer.close()


class ControlFollower:
    """Applies this model's control records to the engine, on the main thread: everything
    already on the topic at start, then what arrives, looked at every ``every_s``."""

    def __init__(
        self,
        reader: ControlReader,
        apply: Callable[[RoutingUpdate, str], None],
        refused: Any,
        every_s: float = 0.05,
    ) -> None:
        self._reader = reader
        self._apply = apply
        self._refused = refused
        self._every_s = every_s
        self._next_at = 0.0

    def catch_up(self) -> None:
        for message in self._reader.catch_up():
            self._handle(message)

    def turn(self, now: float) -> None:
        if now < self._next_at:
            return
        self._next_at = now + self._every_s
        for message in self._reader.poll():
            self._handle(message)

    def _handle(self, message: ControlMessage) -> None:
        if message.update is None:
            self._refused.inc()
            worker_log.warning(
                "control record refused, the weights in force stay: %s", message.error
            )
            return
        self._apply(message.update, "control topic")
        lag_ms = time.time() * 1000 - message.produced_ms
        worker_log.info(
            "control record applied %.0f ms after it was written",
            lag_ms,
            extra={"control_lag_ms": round(lag_ms)},
        )

    def close(self) -> None:
        self._reader.close()


def write_update(cfg: PipelineConfig, update: RoutingUpdate) -> None:
    """Publish a routing update for ``cfg.model`` (what ``streaming route`` does)."""
    parse_update(update.model_dump_json().encode(), [v.version for v in cfg.model.versions])
    producer = Producer(kafka.producer_settings(cfg.kafka, "streaming-route"))
    errors: list[str] = []
    producer.produce(
        cfg.topics.control,
        update.model_dump_json().encode(),
        cfg.model.name.encode(),
        on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
    )
    left = producer.flush(15)
    if left or errors:
        raise RuntimeError(
            f"the control record was not delivered to {cfg.topics.control}: "
            f"{errors[0] if errors else 'timed out'}"
        )


def describe(update: RoutingUpdate) -> str:
    return json.dumps({"weights": update.weights, "shadows": update.shadows}, sort_keys=True)
