"""The pipeline config: typed, documented, strict, frozen once loaded.

A typo or a bad value fails at start with the field's dotted path and what was expected.
Kafka settings are librdkafka's own dotted names, passed through unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from streaming.config_scoring import BatchingConfig, WorkerConfig
from streaming.config_sections import (
    MonitorConfig,
    OutputsConfig,
    ReasonsConfig,
    SchemaRegistryConfig,
    Strict,
    TracingConfig,
)
from streaming.decision.config import DecisionConfig, decision_problem
from streaming.engine.routing_rules import routing_problem
from streaming.kafka.secrets import ENV_SECRETS_DIR, SECRET_KEYS, SecretsError, load_secrets

ENV_BOOTSTRAP = "STREAMING_BOOTSTRAP"
"""Overrides ``kafka.bootstrap``; ``--bootstrap`` on the command line overrides both."""

ENV_SCHEMA_REGISTRY_URL = "STREAMING_SCHEMA_REGISTRY_URL"
"""Overrides ``schema_registry.url`` (and supplies it when the file has none)."""

KafkaValue = str | int | float | bool


TRANSACTION_COMMIT_ROOM_MS = 5_000
"""Room a transaction needs above commit interval and drain for its commit's round trips."""


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid; the message says where and the fix."""


_Strict = Strict  # the base of every section here


class KafkaConfig(_Strict):
    bootstrap: str = Field(min_length=1)
    """host:port[,host:port...] of the Kafka cluster."""
    group: str = Field(min_length=1)
    """Consumer group of the workers: partitions are spread over its members."""
    common: dict[str, KafkaValue] = Field(default_factory=dict)
    """librdkafka settings for every client (security.protocol, sasl.*, ssl.*)."""
    consumer: dict[str, KafkaValue] = Field(default_factory=dict)
    """librdkafka settings for the worker's consumer (fetch.wait.max.ms, session.timeout.ms)."""
    producer: dict[str, KafkaValue] = Field(default_factory=dict)
    """librdkafka settings for the worker's producer (linger.ms, compression.type)."""
    secrets_dir: str | None = None
    """Directory of credential files, one librdkafka property per file (sasl.username,
    sasl.password, ...): a mounted Kubernetes Secret. ``STREAMING_KAFKA_SECRETS_DIR``
    overrides it. Passwords may only come from here, never from this file."""

    @field_validator("common", "consumer", "producer")
    @classmethod
    def _no_managed_keys(cls, value: dict[str, KafkaValue]) -> dict[str, KafkaValue]:
        managed = {
            "bootstrap.servers",
            "group.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
        }
        clash = sorted(managed & value.keys())
        if clash:
            raise ValueError(
                f"{', '.join(clash)} is managed by the worker (use kafka.bootstrap / kafka.group; "
                "offsets are always committed by the worker after delivery)"
            )
        secret = sorted(k for k in value if k in SECRET_KEYS)
        if secret:
            raise ValueError(
                f"{', '.join(secret)} must not be written in the config: put it in a file named "
                "after it in kafka.secrets_dir (a mounted Secret)"
            )
        return value


class TopicsConfig(_Strict):
    input: str = Field(min_length=1)
    """Feature events: key = entity id, value = JSON of the pipeline's schema."""
    predictions: str = Field(min_length=1)
    dead_letters: str = Field(min_length=1)
    telemetry: str = Field(min_length=1)
    control: str = Field(min_length=1)
    """Compacted: key = model name, value = routing weights."""
    shadow: str | None = None
    """Shadow versions' predictions; default ``<predictions>.shadow``."""
    verdicts: str | None = None
    """The monitor's verdict per window and version; default ``<telemetry>.verdicts``."""
    alerts: str | None = None
    """The monitor's alerts (rollbacks, drift); default ``<telemetry>.alerts``."""
    labels: str | None = None
    """Ground truth (chargebacks, analyst verdicts): key = entity id, value JSON {event_id,
    label 0/1, label_ts_ms, source}; default ``<input>.labels``. Partition it like the
    predictions (same key, same partition count) so the monitor's join stays co-partitioned."""
    state: str | None = None
    """The state stage's compacted changelog (pipelines that declare one); default
    ``<input>.state.<kafka.group>``: one per consumer group, as Kafka Streams names its
    changelogs after the application, since two groups reading the same input keep two states
    (streaming.kafka.topics.state_topic)."""
    partitions: int = Field(default=4, ge=1, le=10_000)
    """Partitions for ``streaming topics create``; the upper bound on useful worker replicas."""
    replication_factor: int = Field(default=1, ge=1)

    @property
    def shadow_topic(self) -> str:
        return self.shadow or f"{self.predictions}.shadow"

    @property
    def verdicts_topic(self) -> str:
        return self.verdicts or f"{self.telemetry}.verdicts"

    @property
    def alerts_topic(self) -> str:
        return self.alerts or f"{self.telemetry}.alerts"

    @property
    def labels_topic(self) -> str:
        return self.labels or f"{self.input}.labels"

    @property
    def quality_topic(self) -> str:
        """Quality per version and window of prediction time (precision, recall, PR-AUC)."""
        return f"{self.telemetry}.quality"


class PipelineRef(_Strict):
    module: str = Field(min_length=1)
    """Importable module that defines ``PIPELINE`` (a streaming.pipeline.PipelineSpec)."""
    max_event_bytes: int = Field(default=65_536, ge=64)
    """Larger values go to the dead letters (stage decode) before any parsing."""
    format: Literal["json", "avro", "protobuf", "json-schema"] = "json"
    """Encoding of input values: UTF-8 JSON, or Confluent-framed Avro / Protobuf / JSON Schema
    whose writer schema is fetched from ``schema_registry`` by the id in each value."""


class VersionConfig(_Strict):
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    runtime: Literal["onnx", "torch"] = "onnx"
    device: str = "cpu"
    """cpu, cuda or cuda:N."""
    threads: int = Field(default=1, ge=1, le=256)
    """Intra-op threads of the runtime; the worker's own I/O needs a core too."""
    weight: float = Field(default=100.0, ge=0)
    """Share of traffic, relative to the other versions' weights (sticky by key)."""
    shadow_share: float = Field(default=0.0, ge=0, le=1)
    """Share of all traffic this version also scores as a shadow: results go to the shadow
    topic and telemetry only, never to predictions, and never hold up the primary path."""
    path: str | None = None
    """Artifact folder; default ``<models_dir>/<model name>/<version>``."""
    half: bool = False
    """torch on cuda: run the model in float16 (scores are still returned as float32)."""
    cuda_graphs: bool | None = None
    """torch on cuda: capture a CUDA graph per warm-up batch size; default on for cuda."""

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value == "cpu" or value == "cuda":
            return value
        if value.startswith("cuda:") and value[5:].isdigit():
            return value
        raise ValueError("expected 'cpu', 'cuda' or 'cuda:N'")

    @model_validator(mode="after")
    def _torch_only_options(self) -> VersionConfig:
        if self.runtime != "torch" and (self.half or self.cuda_graphs):
            raise ValueError("half and cuda_graphs are options of runtime: torch")
        if (self.half or self.cuda_graphs) and self.device == "cpu":
            raise ValueError("half and cuda_graphs need device: cuda (or cuda:N)")
        return self


class ModelConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    versions: tuple[VersionConfig, ...] = Field(min_length=1)
    threshold: float = Field(default=0.5, ge=0, le=1)
    """Scores at or above it are flagged in the prediction."""

    @model_validator(mode="after")
    def _versions_unique_and_routable(self) -> ModelConfig:
        names = [v.version for v in self.versions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"versions: {', '.join(dupes)} listed twice")
        problem = routing_problem(
            {v.version: v.weight for v in self.versions},
            {v.version: v.shadow_share for v in self.versions},
            names,
        )
        if problem:
            raise ValueError(f"versions: {problem}")
        return self


class PipelineConfig(_Strict):
    """One pipeline: where events come from, how they are scored, where results go."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    pipeline: PipelineRef
    kafka: KafkaConfig
    topics: TopicsConfig
    model: ModelConfig
    models_dir: str = "models"
    """Where ``<model>/<version>/`` artifacts live; relative to the working directory."""
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    schema_registry: SchemaRegistryConfig | None = None
    """Required when pipeline.format or outputs.format is not json."""
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    reasons: ReasonsConfig | None = None
    """Reason codes of explained predictions (feature -> code); None: no explanations."""
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    """Review and decline thresholds, and the optional decision graph (streaming.decision)."""
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"
    """``exactly-once``: outputs and input offsets are committed in one Kafka transaction, so
    readers with isolation.level=read_committed see each event's outputs once, even after a
    kill -9. It drains the pipeline at every commit (worker.commit_interval_ms): measure the
    cost with loadtests/exactly_once.py."""

    @model_validator(mode="after")
    def _monitor_baseline_known(self) -> PipelineConfig:
        known = [v.version for v in self.model.versions]
        if self.monitor.baseline is not None and self.monitor.baseline not in known:
            raise ValueError(
                f"monitor.baseline {self.monitor.baseline!r} is not a model version; "
                f"choose one of {', '.join(known)}"
            )
        return self

    @model_validator(mode="after")
    def _transaction_outlasts_a_commit(self) -> PipelineConfig:
        """A transaction timeout below a healthy transaction's life would have the broker
        abort healthy transactions (the worker then exits 1 and redoes them, forever)."""
        value = self.kafka.producer.get("transaction.timeout.ms")
        if self.delivery != "exactly-once" or value is None:
            return self
        floor = self.worker.longest_transaction_ms + TRANSACTION_COMMIT_ROOM_MS
        try:
            timeout = int(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"kafka.producer.transaction.timeout.ms must be milliseconds, got {value!r}"
            ) from None
        if timeout < floor:
            raise ValueError(
                f"kafka.producer.transaction.timeout.ms ({timeout}) is below {floor}: "
                "worker.commit_interval_ms + worker.drain_timeout_s + 5 s for the commit, "
                "so the broker would abort healthy transactions; raise it, lower "
                "worker.drain_timeout_s, or remove it (the default is that sum + 10 s)"
            )
        return self

    @model_validator(mode="after")
    def _decision_valid(self) -> PipelineConfig:
        problem = decision_problem(
            self.decision, [v.version for v in self.model.versions], self.model.threshold
        )
        if problem:
            raise ValueError(problem)
        if self.decision.graph is not None:
            shadows = [v.version for v in self.model.versions if v.shadow_share > 0]
            if shadows:
                raise ValueError(
                    f"model.versions: {', '.join(shadows)} has a shadow_share, but with "
                    "decision.graph every row goes through the graph; score it as a "
                    "challenger node instead"
                )
        return self

    @model_validator(mode="after")
    def _registry_when_framed(self) -> PipelineConfig:
        framed = [
            f"{key}: {fmt}"
            for key, fmt in (
                ("pipeline.format", self.pipeline.format),
                ("outputs.format", self.outputs.format),
            )
            if fmt != "json"
        ]
        if framed and self.schema_registry is None:
            raise ValueError(
                f"schema_registry.url is required with {' and '.join(framed)}: add "
                f"schema_registry: {{url: http://HOST:8081}} or set {ENV_SCHEMA_REGISTRY_URL}"
            )
        return self

    def version_dir(self, version: VersionConfig) -> Path:
        return Path(version.path or Path(self.models_dir) / self.model.name / version.version)

    def with_overrides(self, **changes: Any) -> PipelineConfig:
        """A copy with dotted-path overrides applied and re-validated (``kafka.bootstrap=...``)."""
        data = self.model_dump()
        for dotted, value in changes.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node[part]
            node[leaf] = value
        return PipelineConfig.model_validate(data)


def format_validation_error(source: str, exc: ValidationError) -> str:
    """One line per problem: ``file: dotted.path: what is wrong (got X)``."""
    lines = [f"{source}: invalid pipeline config:"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key; check its spelling against README.md, Pipeline config"
        elif err["type"] == "value_error" and not err["loc"]:
            # a check across sections says its own path (decision.graph.nodes.x.inputs[1])
            lines.append(f"  {msg.removeprefix('Value error, ')}")
            continue
        lines.append(f"  {path}: {msg}{shown}")
    return "\n".join(lines)


def load_config(path: str | Path, bootstrap: str | None = None) -> PipelineConfig:
    """Read, validate and freeze a pipeline config; bootstrap from arg > env > file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    secrets_dir = os.environ.get(ENV_SECRETS_DIR)
    if secrets_dir and isinstance(raw.get("kafka"), dict):
        raw["kafka"]["secrets_dir"] = secrets_dir
    override = bootstrap or os.environ.get(ENV_BOOTSTRAP)
    if override:
        raw.setdefault("kafka", {})
        if isinstance(raw["kafka"], dict):
            raw["kafka"]["bootstrap"] = override
    registry_url = os.environ.get(ENV_SCHEMA_REGISTRY_URL)
    if registry_url:
        section = raw.get("schema_registry")
        if section is None:
            raw["schema_registry"] = section = {}
        if isinstance(section, dict):
            section["url"] = registry_url
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
    try:
        load_secrets(cfg.kafka.secrets_dir)  # fail at start, not at the first connection
    except (SecretsError, OSError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg
