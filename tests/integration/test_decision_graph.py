"""pipelines/fraud/pipeline-graph.yaml through `streaming run` on the embedded broker: every
event gets one prediction with a decision and the scores of the nodes that ran (by event id),
and the decisions are not all the same."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from streaming.config import load_config
from streaming.dev.produce import produce_events
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import ROOT, read_topic, start_worker

pytestmark = pytest.mark.integration


def test_the_graph_pipeline_decides_every_event(broker, models_built, tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "pipelines" / "fraud" / "pipeline-graph.yaml").read_text())
    tag = uuid.uuid4().hex[:8]
    raw["kafka"]["bootstrap"] = broker.bootstrap
    raw["kafka"]["group"] = f"g-{tag}"
    for key in ("input", "predictions", "dead_letters", "telemetry", "control"):
        raw["topics"][key] = f"t-{tag}.{key}"
    raw["models_dir"] = str(ROOT / "models")
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    create_topics(cfg)
    produced = produce_events(cfg, 8_000, invalid_ratio=0.01, seed=23, keep=True)
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    assert worker.wait(120) == 0, worker.log()

    valid = {e.event_id: e for e in produced.events if e.invalid_kind is None}
    preds = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.predictions, len(valid))]
    assert Counter(p["event_id"] for p in preds) == Counter(set(valid))
    shares = Counter(p["decision"] for p in preds)
    # mostly approve, and both other outcomes happen (fraud is ~0.5% of the traffic)
    assert shares["approve"] > 0.9 * len(preds) and shares["review"] and shares["decline"]
    for p in preds:
        event = json.loads(valid[p["event_id"]].value)
        scores = p["scores"]
        assert "v1" in scores  # the cheap model scores every row
        fired = {r["code"] for r in p["reasons"]}
        challenged = event["amount"] >= 1000 or "CNP_RISKY_ABROAD" in fired
        assert ("v3" in scores) == challenged  # the challenger only where it is asked to run
        big = event["amount"] >= 200
        if big:
            assert "v2" in scores  # the switch sends high amounts to the blend
            assert p["score"] == pytest.approx(0.25 * scores["v1"] + 0.75 * scores["v2"], 1e-5)
        assert p["flagged"] == (p["score"] >= 0.5)
        assert [r["weight"] for r in p["reasons"]] == sorted(
            (r["weight"] for r in p["reasons"]), reverse=True
        )
    assert any(p["reasons"] for p in preds)
