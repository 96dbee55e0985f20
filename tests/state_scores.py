"""What an uninterrupted run would have scored: the state stage over each input partition in
offset order, the model's preprocessing, the model. Tests of restarts and rebalances compare
every prediction with it."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
from pydantic import ValidationError

from pipelines.fraud import PIPELINE
from streaming.runtimes.registry import create_runtime
from streaming.state import history_features
from tests.kafka_helpers import read_topic


def offline_scores(cfg, models_built, n: int) -> tuple[dict[str, float], int]:  # type: ignore[no-untyped-def]
    """event id -> the score of an uninterrupted run: the stage over each partition of the
    input in offset order, the model's preprocessing, the model; and how many events had a
    history in the last hour (so that a test knows the state mattered)."""
    inputs = read_topic(cfg, cfg.topics.input, n)
    runtime = create_runtime("onnx", models_built / "v2")
    runtime.load()
    pre = PIPELINE.make_preprocessor(runtime.metadata.preprocessing)
    by_partition = defaultdict(list)
    for rec in inputs:
        by_partition[rec.partition].append(rec)
    want: dict[str, float] = {}
    busy = 0
    for part in by_partition.values():
        part.sort(key=lambda r: r.offset)
        valid = [(r, _valid(r.value)) for r in part]  # dead letters never reach the state
        part = [r for r, rec in valid if rec is not None]
        recs = [rec for _, rec in valid if rec is not None]
        state = history_features(PIPELINE.state, [r.key for r in part], recs)  # type: ignore[arg-type]
        busy += int((state[:, PIPELINE.state.names.index("txn_count_1h")] > 0).sum())  # type: ignore[union-attr]
        scores = runtime.predict(pre.transform(recs, state))
        want.update(zip([r.event_id for r in recs], scores.tolist(), strict=True))
    return want, busy


def assert_scores_equal(preds, want: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    """Every prediction (each copy, duplicates included) has the uninterrupted run's score."""
    got = [(json.loads(p.value)["event_id"], json.loads(p.value)["score"]) for p in preds]
    assert {e for e, _ in got} == set(want), "events missing or unknown"
    diff = np.array([abs(score - want[e]) for e, score in got])
    assert diff.max() <= 1e-6, f"{(diff > 1e-6).sum()} scores differ, by up to {diff.max()}"


def _valid(value: bytes):  # type: ignore[no-untyped-def]
    try:
        return PIPELINE.schema.model_validate_json(value)
    except (ValidationError, ValueError):
        return None
