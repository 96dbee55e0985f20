"""The model passthrough (loadtests.baselines), which `loadtests.efficiency --baseline model`
pairs the worker with, on the real broker. It must do the pipeline's work, not only the I/O:
every event is scored once, as the pipeline and model score it, or the worker's cost over it
would be measured against a floor that skips work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.baselines import model_passthrough
from streaming.dev.broker import EmbeddedBroker
from streaming.dev.produce import produce_events
from streaming.kafka.topics import create_topics
from streaming.pipeline import load_pipeline
from streaming.runtimes.registry import create_runtime
from tests.kafka_helpers import read_topic, write_config

pytestmark = pytest.mark.integration

EVENTS = 300


def _drain(broker: EmbeddedBroker, tmp_path: Path, module: str) -> tuple[object, dict[str, float]]:
    _, cfg = write_config(tmp_path, broker.bootstrap, **{"pipeline.module": module})
    create_topics(cfg)
    sent = produce_events(cfg, EVENTS, invalid_ratio=0.0, seed=11, keep=True)
    assert sent.produced == EVENTS
    drained = model_passthrough(cfg, cfg.topics.predictions, EVENTS, timeout_s=120)
    assert drained.events == EVENTS
    got = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.predictions, EVENTS)]
    scores = {p["event_id"]: p["score"] for p in got}
    assert len(got) == len(scores) == EVENTS  # each event once
    assert set(scores) == {e.event_id for e in sent.events}
    return (cfg, sent), scores


def test_every_event_is_scored_as_the_pipeline_and_model_score_it(
    broker: EmbeddedBroker, tmp_path: Path, models_built: Path
) -> None:
    """The plain pipeline (no state): the scores equal the same model's on the same events,
    preprocessed in one batch offline."""
    (cfg, sent), scores = _drain(broker, tmp_path, "loadtests.stateless_fraud")
    spec = load_pipeline(cfg.pipeline.module)  # type: ignore[attr-defined]
    version = cfg.model.versions[0]  # type: ignore[attr-defined]
    runtime = create_runtime(
        version.runtime,
        cfg.version_dir(version),  # type: ignore[attr-defined]
        version.device,
        version.threads,
    )
    runtime.load()
    pre = spec.make_preprocessor(runtime.metadata.preprocessing)
    records = [spec.schema.model_validate_json(e.value) for e in sent.events]  # type: ignore[attr-defined]
    expected = runtime.predict(pre.transform(records)).tolist()
    ids = [e.event_id for e in sent.events]  # type: ignore[attr-defined]
    assert [scores[i] for i in ids] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert len(set(expected)) > EVENTS // 2  # the model tells events apart: not a constant


def test_with_a_state_stage_every_event_is_scored_once(
    broker: EmbeddedBroker, tmp_path: Path, models_built: Path
) -> None:
    """The fraud pipeline with its per-card state stage: the stage runs on each poll batch."""
    _, scores = _drain(broker, tmp_path, "pipelines.fraud")
    assert all(0.0 <= s <= 1.0 for s in scores.values())
