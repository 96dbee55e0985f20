"""The pipeline's topics: created idempotently (existing ones are kept), and checked before a
client starts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from streaming.config import PipelineConfig
from streaming.kafka import settings as kafka

log = logging.getLogger("streaming.worker")


def create_topics(
    cfg: PipelineConfig, partitions: int | None = None, timeout: float = 15.0
) -> dict[str, str]:
    """Return topic -> 'created' | 'exists'. The control topic is compacted."""
    admin = kafka.admin_client(kafka.admin_settings(cfg.kafka))
    t = cfg.topics
    n = partitions or t.partitions
    wanted = {
        t.input: NewTopic(t.input, n, t.replication_factor),
        t.predictions: NewTopic(t.predictions, n, t.replication_factor),
        t.dead_letters: NewTopic(t.dead_letters, n, t.replication_factor),
        t.telemetry: NewTopic(t.telemetry, 1, t.replication_factor),
        t.shadow_topic: NewTopic(t.shadow_topic, n, t.replication_factor),
        t.verdicts_topic: NewTopic(t.verdicts_topic, 1, t.replication_factor),
        t.alerts_topic: NewTopic(t.alerts_topic, 1, t.replication_factor),
        # Labels are partitioned like the predictions (same key): the monitor's join is
        # co-partitioned, so its changelog-backed tables restore per partition.
        t.labels_topic: NewTopic(t.labels_topic, n, t.replication_factor),
        t.quality_topic: NewTopic(t.quality_topic, 1, t.replication_factor),
        # The state stage's changelog (streaming.state.changelog). Cheap without a state stage.
        state_topic(cfg): state_topic_spec(cfg, n),
        t.control: NewTopic(
            t.control, 1, t.replication_factor, config={"cleanup.policy": "compact"}
        ),
    }
    if cfg.monitor.labels:
        # The monitor's join tables (faust declares no topics here): compacted changelogs.
        # Imported here: the worker uses this module and must not load the monitor's code.
        from streaming.rollout.monitor.labeljoin import changelog_topics

        for name in changelog_topics(cfg):
            wanted[name] = NewTopic(
                name, n, t.replication_factor, config={"cleanup.policy": "compact"}
            )
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise RuntimeError(
            f"cannot reach Kafka at {cfg.kafka.bootstrap} ({exc}); is the broker running? "
            "(for development: streaming broker --port 9092)"
        ) from None
    result = {name: "exists" for name in wanted if name in existing}
    todo = [topic for name, topic in wanted.items() if name not in existing]
    if todo:
        for name, fut in admin.create_topics(todo, operation_timeout=timeout).items():
            try:
                fut.result(timeout)
                result[name] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    result[name] = "exists"
                else:
                    raise RuntimeError(f"creating topic {name}: {exc}") from None
    return result


def state_topic(cfg: PipelineConfig) -> str:
    """The state stage's changelog: ``topics.state``, by default one per consumer group (two
    groups reading one input keep two states; sharing a changelog would mix them)."""
    return cfg.topics.state or f"{cfg.topics.input}.state.{cfg.kafka.group}"


def state_topic_spec(cfg: PipelineConfig, partitions: int) -> NewTopic:
    """One changelog partition per input partition, compacted to each key's latest rows."""
    name = state_topic(cfg)
    return NewTopic(
        name, partitions, cfg.topics.replication_factor, config={"cleanup.policy": "compact"}
    )


def ensure_state_topic(cfg: PipelineConfig, error: type[Exception]) -> str:
    """Create the changelog if it is missing (a new consumer group gets its own, as Kafka
    Streams creates its internal topics), with the input's partition count; ``error`` with
    the fix when that is refused."""
    name = state_topic(cfg)
    meta = kafka.cluster_metadata(cfg.kafka, error)
    source = meta.topics.get(cfg.topics.input)
    if source is None or source.error is not None:
        raise error(
            f"topic {cfg.topics.input} missing on {cfg.kafka.bootstrap}; create the topics "
            "with: streaming topics create -c CONFIG"
        )
    found = meta.topics.get(name)
    if found is not None and found.error is None:
        if len(found.partitions) < len(source.partitions):
            raise error(
                f"the state changelog {name} has {len(found.partitions)} partitions and "
                f"{cfg.topics.input} {len(source.partitions)}: it needs one per input "
                "partition; add partitions to it, or set topics.state to a new topic"
            )
        return name
    admin = kafka.admin_client(kafka.admin_settings(cfg.kafka))
    future = admin.create_topics([state_topic_spec(cfg, len(source.partitions))])[name]
    try:
        future.result(15.0)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise error(
                f"cannot create the state changelog {name} ({exc}); create it (compacted, "
                f"{len(source.partitions)} partitions like {cfg.topics.input}) or set "
                "topics.state to one that exists"
            ) from None
        return name
    log.info(
        "created the state changelog %s (compacted, %d partitions like %s)",
        name,
        len(source.partitions),
        cfg.topics.input,
    )
    return name


def require_topics(cfg: PipelineConfig, names: Sequence[str], error: type[Exception]) -> None:
    """Raise ``error`` with the fix if the broker cannot be reached or a topic is missing."""
    meta = kafka.cluster_metadata(cfg.kafka, error)
    missing = [n for n in names if n not in meta.topics or meta.topics[n].error is not None]
    if missing:
        raise error(
            f"topics missing on {cfg.kafka.bootstrap}: {', '.join(missing)}; create them "
            "with: streaming topics create -c CONFIG"
        )
