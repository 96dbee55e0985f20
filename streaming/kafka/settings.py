"""librdkafka settings for each client the project makes, from the pipeline config."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streaming.config import KafkaConfig, PipelineConfig
from streaming.kafka.secrets import load_secrets

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


class _CapturedLog:
    """librdkafka's log lines of one short-lived client, kept instead of printed."""

    MARKERS = ("authentication", "SSL handshake", "certificate verify", "SASL")

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, _level: int, fmt: str, *args: object) -> None:
        self.lines.append(fmt % args if args else fmt)

    def refusal(self) -> str | None:
        for line in reversed(self.lines):
            if any(m in line for m in self.MARKERS):
                return line.split("]: ", 1)[-1].split(": ", 1)[-1]
        return None


def hint(error_name: str) -> str:
    return _HINTS.get(error_name, "")


def cluster_metadata(cfg: KafkaConfig, error: type[Exception], timeout: float = 10.0) -> Any:
    """The cluster's metadata, or ``error`` with the cause and the fix.

    A rejected login shows only as "transport failure" from list_topics; the client's log has
    the real reason, so it is captured, and a refusal ends the wait at once instead of after
    the whole timeout (and instead of a log line per retry).
    """
    log = _CapturedLog()
    admin = AdminClient({**admin_settings(cfg), "logger": log})
    deadline = time.monotonic() + timeout
    last: KafkaException | None = None
    while time.monotonic() < deadline:
        try:
            return admin.list_topics(timeout=1.0)
        except KafkaException as exc:
            last = exc
        admin.poll(0.05)
        refused = log.refusal()
        if refused:
            raise error(
                f"Kafka at {cfg.bootstrap} refused the connection: {refused}. Check "
                "security.protocol and sasl.mechanism in kafka.common, the credentials in "
                "kafka.secrets_dir (the files sasl.username and sasl.password) and the ssl.* "
                "settings"
            )
    err = last.args[0] if last is not None and last.args else None
    name = err.name() if isinstance(err, KafkaError) else ""
    raise error(
        f"cannot reach Kafka at {cfg.bootstrap}: {last}. "
        f"{hint(name) or 'Is the broker running and kafka.bootstrap right?'}"
    )


def _base(cfg: KafkaConfig) -> dict[str, Any]:
    return {"bootstrap.servers": cfg.bootstrap, **cfg.common, **load_secrets(cfg.secrets_dir)}


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


def changelog_producer_settings(cfg: KafkaConfig, client_id: str) -> dict[str, Any]:
    """The state changelog's own producer in at-least-once mode (streaming.state.changelog):
    only a commit's partition records are acked, each vouching for the key records before it
    in its partition. That holds because no record can go missing while a later one lands:
    idempotence keeps per-partition order, the gapless guarantee turns any failure that
    would leave a gap into a fatal error, and no record times out (``message.timeout.ms`` 0:
    the one failure gapless does not cover). These three win over ``kafka.producer``."""
    return {
        **producer_settings(cfg, client_id),
        "enable.idempotence": True,
        "enable.gapless.guarantee": True,
        "message.timeout.ms": 0,
        "logger": _CHANGELOG_LOG,
    }


class _GaplessIsExperimental(logging.Filter):
    """librdkafka warns at every start that the gapless guarantee is experimental; the
    changelog's design depends on it knowingly (README, Where the state lives)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "enable.gapless.guarantee is experimental" not in record.getMessage()


_CHANGELOG_LOG = logging.getLogger("streaming.librdkafka.changelog")
_CHANGELOG_LOG.addFilter(_GaplessIsExperimental())


TRANSACTION_MARGIN_MS = 10_000
"""The default transaction.timeout.ms is the longest healthy transaction plus this: room for
the commit's round trips on a slow broker, and little more, since it is also how long
read_committed readers wait behind a worker that died and never comes back under its id."""


def transaction_timeout_ms(cfg: PipelineConfig) -> int:
    """``kafka.producer.transaction.timeout.ms`` if set (checked at load to outlast a healthy
    transaction), else commit interval + drain deadline + 10 s (30.5 s with the defaults)."""
    explicit = cfg.kafka.producer.get("transaction.timeout.ms")
    if explicit is not None:
        return int(explicit)
    return cfg.worker.longest_transaction_ms + TRANSACTION_MARGIN_MS


def transactional_settings(cfg: PipelineConfig, worker_id: str) -> dict[str, Any]:
    """The producer of exactly-once mode: one transactional id per worker, stable across its
    restarts (STREAMING_WORKER_ID; the chart sets the pod name, stable under a StatefulSet),
    so that a restarted worker aborts its predecessor's open transaction at once; offsets go
    through send_offsets_to_transaction with the consumer's group metadata (KIP-447), which
    fences a member that lost its partitions. A worker that never comes back under the same
    id leaves its open transaction to the broker's timeout: read_committed readers wait that
    long (README, Exactly-once and rescheduled pods)."""
    return {
        "transactional.id": f"{cfg.kafka.group}-{worker_id}",
        "transaction.timeout.ms": transaction_timeout_ms(cfg),
    }


def admin_settings(cfg: KafkaConfig) -> dict[str, Any]:
    return _base(cfg)


def admin_client(settings: dict[str, Any]) -> AdminClient:
    """An AdminClient whose librdkafka log goes through logging (``streaming.librdkafka``),
    not stderr: destroyed with an admin result still queued, librdkafka prints "Purging 1
    unserved events from background queue", which is nobody's business on a command's
    stderr."""
    return AdminClient({**settings, "logger": logging.getLogger("streaming.librdkafka")})


def reader_settings(cfg: KafkaConfig, group: str, **extra: Any) -> dict[str, Any]:
    """A plain reader of an output topic (tests, demo, monitors): latency does not matter,
    so it keeps a long fetch wait (README, Latency and the embedded broker)."""
    return {
        **_base(cfg),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "fetch.wait.max.ms": 500,
        **extra,
    }
