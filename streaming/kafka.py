"""librdkafka settings for each client the project makes, from the pipeline config."""

from __future__ import annotations

from typing import Any

from streaming.config import KafkaConfig

# Errors from librdkafka that mean "fix the setup", mapped to the fix, so a start-up failure
# says what to do rather than only what happened.
_HINTS = {
    "_TRANSPORT": "is the broker running and kafka.bootstrap right?",
    "_ALL_BROKERS_DOWN": "is the broker running and kafka.bootstrap right?",
    "_RESOLVE": "the bootstrap host name does not resolve; check kafka.bootstrap",
    "_AUTHENTICATION": "check the SASL/TLS settings and credentials in kafka.common",
    "UNKNOWN_TOPIC_OR_PART": "create the topics first: streaming topics create -c CONFIG",
    "_UNKNOWN_TOPIC": "create the topics first: streaming topics create -c CONFIG",
    "TOPIC_AUTHORIZATION_FAILED": "the principal may not use this topic; check the broker ACLs",
}


def hint(error_name: str) -> str:
    return _HINTS.get(error_name, "")


def _base(cfg: KafkaConfig) -> dict[str, Any]:
    return {"bootstrap.servers": cfg.bootstrap, **cfg.common}


def consumer_settings(cfg: KafkaConfig, client_id: str) -> dict[str, Any]:
    """The worker's consumer: no auto-commit; offsets are committed by the ledger only."""
    return {
        **_base(cfg),
        "group.id": cfg.group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "enable.partition.eof": False,
        **cfg.consumer,
    }


def producer_settings(cfg: KafkaConfig, client_id: str) -> dict[str, Any]:
    """One idempotent producer: per-partition order survives retries, nothing is doubled."""
    return {
        **_base(cfg),
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "queue.buffering.max.messages": 500_000,
        **cfg.producer,
    }


def admin_settings(cfg: KafkaConfig) -> dict[str, Any]:
    return _base(cfg)


def reader_settings(cfg: KafkaConfig, group: str, **extra: Any) -> dict[str, Any]:
    """A plain reader of an output topic (tests, demo, monitors): latency does not matter,
    so it keeps a long fetch wait (see DESIGN.md on the embedded broker's fetch walk)."""
    return {
        **_base(cfg),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "fetch.wait.max.ms": 500,
        **extra,
    }
