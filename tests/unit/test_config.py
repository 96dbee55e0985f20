"""Bad config fails at start with the field's path and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streaming.config import ENV_BOOTSTRAP, ConfigError, load_config

BASE = Path(__file__).resolve().parents[2] / "pipelines" / "fraud" / "pipeline.yaml"
GPU = BASE.with_name("pipeline-gpu.yaml")
CANARY = BASE.with_name("pipeline-canary.yaml")


def write(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(BASE.read_text())
    mutate(raw)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_config_is_valid_and_frozen() -> None:
    cfg = load_config(BASE)
    assert cfg.topics.input and cfg.kafka.group
    with pytest.raises(Exception, match="frozen"):
        cfg.kafka.group = "x"  # type: ignore[misc]


def test_the_gpu_config_keeps_the_contracts_and_captures_every_warm_up_size() -> None:
    cpu, gpu = load_config(BASE), load_config(GPU)
    assert gpu.topics == cpu.topics and gpu.pipeline == cpu.pipeline
    (version,) = gpu.model.versions
    assert (version.runtime, version.device, version.cuda_graphs) == ("torch", "cuda", True)
    # drain batches fill to max_batch_size: it must be a warm-up (= captured) size
    assert gpu.batching.max_batch_size in gpu.batching.warmup_sizes()


def test_the_canary_config_keeps_the_contracts_and_loads_three_versions() -> None:
    """README's route example names v1, v2 and v3: this shipped config loads all three, on the
    same topics, in a group of its own (a v2-only worker would refuse their control records)."""
    base, canary = load_config(BASE), load_config(CANARY)
    assert canary.topics == base.topics and canary.pipeline == base.pipeline
    assert canary.kafka.group != base.kafka.group
    versions = {v.version: (v.weight, v.shadow_share) for v in canary.model.versions}
    assert versions == {"v2": (90, 0), "v1": (10, 0), "v3": (0, 0.2)}


def test_bootstrap_precedence_argument_over_env_over_file(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(ENV_BOOTSTRAP, "env:1")
    assert load_config(BASE).kafka.bootstrap == "env:1"
    assert load_config(BASE, bootstrap="arg:2").kafka.bootstrap == "arg:2"
    monkeypatch.delenv(ENV_BOOTSTRAP)
    assert load_config(BASE).kafka.bootstrap == "127.0.0.1:9092"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["batching"].update(max_delay_ms=-1), "batching.max_delay_ms"),
        (lambda r: r["topics"].update(inptu="x"), "topics.inptu: unknown key"),
        (lambda r: r["topics"].pop("predictions"), "topics.predictions: Field required"),
        (lambda r: r["model"]["versions"][0].update(device="gpu"), "model.versions.0.device"),
        (lambda r: r["model"]["versions"][0].update(runtime="tf"), "model.versions.0.runtime"),
        (lambda r: r["model"]["versions"][0].update(weight=0), "every weight is 0"),
        (
            lambda r: r["kafka"]["consumer"].update({"enable.auto.commit": True}),
            "managed by the worker",
        ),
        (lambda r: r["worker"].update(max_in_flight="lots"), "worker.max_in_flight"),
        (lambda r: r["worker"].update(gc_young_threshold=10), "worker.gc_young_threshold"),
        (lambda r: r["worker"].update(inference_timeout_s=0), "worker.inference_timeout_s"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, mutate))
    assert expected in str(info.value)
    assert str(tmp_path / "p.yaml") in str(info.value)


def test_inference_timeout_defaults_to_10_s_and_is_read(tmp_path: Path) -> None:
    assert load_config(BASE).worker.inference_timeout_s == 10.0
    cfg = load_config(write(tmp_path, lambda r: r["worker"].update(inference_timeout_s=0.5)))
    assert cfg.worker.inference_timeout_s == 0.5


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    def twice(raw) -> None:  # type: ignore[no-untyped-def]
        raw["model"]["versions"].append(dict(raw["model"]["versions"][0]))

    with pytest.raises(ConfigError, match="listed twice"):
        load_config(write(tmp_path, twice))


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def _exactly_once(timeout: object = None, drain_s: float = 20.0):  # type: ignore[no-untyped-def]
    def mutate(raw: dict) -> None:  # type: ignore[type-arg]
        raw["delivery"] = "exactly-once"
        raw.setdefault("worker", {})["drain_timeout_s"] = drain_s
        if timeout is not None:
            raw["kafka"].setdefault("producer", {})["transaction.timeout.ms"] = timeout

    return mutate


def test_transaction_timeout_defaults_to_a_healthy_transaction_plus_10_s(tmp_path: Path) -> None:
    """A transaction stays open a commit interval, then the drain before its commit: the
    broker must not abort that, and should not wait much longer for a dead worker's."""
    from streaming.kafka.settings import transaction_timeout_ms

    cfg = load_config(write(tmp_path, _exactly_once(drain_s=12.5)))
    assert cfg.worker.longest_transaction_ms == cfg.worker.commit_interval_ms + 12_500
    assert transaction_timeout_ms(cfg) == cfg.worker.longest_transaction_ms + 10_000
    explicit = load_config(write(tmp_path, _exactly_once(timeout=60_000)))
    assert transaction_timeout_ms(explicit) == 60_000


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (10_000, r"transaction.timeout.ms \(10000\) is below 25500: .* raise it"),
        ("soon", "transaction.timeout.ms must be milliseconds, got 'soon'"),
    ],
)
def test_a_transaction_timeout_shorter_than_a_healthy_transaction_fails_at_start(
    tmp_path: Path, timeout: object, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, _exactly_once(timeout=timeout)))

    # At-least-once has no transactions: the same producer setting is left to librdkafka.
    def at_least_once(raw: dict) -> None:  # type: ignore[type-arg]
        _exactly_once(timeout=timeout)(raw)
        raw["delivery"] = "at-least-once"

    assert load_config(write(tmp_path, at_least_once)).delivery == "at-least-once"
