"""The shipped decision graph against a hand-written numpy reference on 100,000 generated
events, with the real models: the reference calls onnxruntime itself and does the rules, the
switch, the ensemble, the challenger and the decision in plain numpy, batch by batch as the
engine forms them (256 rows), so scores must match exactly and decisions row for row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from streaming.config import load_config
from streaming.decision.columns import make_columns
from streaming.decision.stage import build_decide_stage
from streaming.engine.versions import load_version
from streaming.observability.metrics import WorkerMetrics
from streaming.pipeline import load_pipeline
from streaming.state import history_features

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 100_000
BATCH = 256


def _session(version: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    path = ROOT / "models" / "fraud" / version / "model.onnx"
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0].reshape(-1).astype(np.float64)


def reference(records: list, x: np.ndarray, names: tuple[str, ...], s: dict) -> dict:
    """pipeline-graph.yaml written out by hand."""
    amount = np.array([r.amount for r in records])
    abroad = np.array([r.country != r.home_country for r in records])
    cnp = np.array([not r.card_present for r in records])
    risky = np.array(
        [r.merchant_category in ("electronics", "digital_goods", "gambling") for r in records]
    )
    large_abroad = (amount > 1000) & abroad
    cnp_risky = cnp & abroad & risky
    far_above = x[:, names.index("log_amount_ratio")] > 3.0
    heavy = (amount >= 200) | large_abroad | cnp_risky | far_above
    v1 = _run(s["v1"], x)
    v2 = np.full(len(x), np.nan)
    if heavy.any():
        v2[heavy] = _run(s["v2"], x[heavy])
    score = v1.copy()
    score[heavy] = 0.25 * v1[heavy] + 0.75 * v2[heavy]
    v3 = np.full(len(x), np.nan)
    big = (amount >= 1000) | cnp_risky
    if big.any():
        v3[big] = _run(s["v3"], x[big])
    decision = (score >= 0.3).astype(int) + (score >= 0.7).astype(int)
    country = np.array([r.country for r in records], dtype=object)
    high_risk = cnp & ((country == "NG") | (country == "BR")) & (amount >= 100)
    review = large_abroad | high_risk  # the overrides: at least a review
    decision[review] = np.maximum(decision[review], 1)
    return {
        "score": score,
        "decision": decision,
        "v1": v1,
        "v2": v2,
        "v3": v3,
        "rules": {
            "LARGE_AMOUNT_ABROAD": large_abroad,
            "CNP_RISKY_ABROAD": cnp_risky,
            "CNP_HIGH_RISK_COUNTRY": high_risk,
            "AMOUNT_FAR_ABOVE_USUAL": far_above,
        },
    }


def test_the_graph_matches_the_numpy_reference_on_100k_events() -> None:
    assert (ROOT / "models" / "fraud" / "v3" / "model.onnx").exists(), "run `make models`"
    cfg = load_config(ROOT / "pipelines" / "fraud" / "pipeline-graph.yaml").with_overrides(
        models_dir=str(ROOT / "models")
    )
    spec = load_pipeline(cfg.pipeline.module)
    metrics = WorkerMetrics(cfg.name)
    versions = [load_version(cfg, v, spec, metrics) for v in cfg.model.versions]
    stage = build_decide_stage(cfg, versions, spec)
    carrier = versions[0]
    names = tuple(carrier.preprocessor.feature_names)
    sessions = {v: _session(v) for v in ("v1", "v2", "v3")}

    events = spec.make_generator(20).batch(EVENTS, 1_760_000_000_000)
    records = [spec.schema.model_validate_json(e.value) for e in events]
    state = history_features(spec.state, [r.card_id for r in records], records)
    seen = {"decision": np.zeros(3, int), "v2": 0, "v3": 0, "overridden": 0}
    for i in range(0, EVENTS, BATCH):
        part = records[i : i + BATCH]
        x = carrier.preprocessor.transform(part, state[i : i + BATCH])
        got = stage.score(carrier, x, make_columns(part, stage.fields))
        want = reference(part, x, names, sessions)
        assert np.array_equal(got.score, want["score"]), i
        assert np.array_equal(got.codes, want["decision"]), i
        assert got.node_scores is not None
        for node in ("v1", "v2", "v3"):
            assert np.array_equal(got.node_scores[node], want[node], equal_nan=True), (i, node)
        fired = got.rule_reasons or {}
        for code, mask in want["rules"].items():
            assert [j for j in range(len(part)) if code in _codes(fired.get(j))] == (
                np.flatnonzero(mask).tolist()
            ), (i, code)
        seen["decision"] += np.bincount(got.codes, minlength=3)
        seen["v2"] += int(np.isfinite(want["v2"]).sum())
        seen["v3"] += int(np.isfinite(want["v3"]).sum())
        plain = (want["score"] >= 0.3).astype(int) + (want["score"] >= 0.7).astype(int)
        seen["overridden"] += int((plain != want["decision"]).sum())
    # every path of the graph was taken: all three decisions, both switch branches, the
    # challenger, an override that changed a decision
    assert all(seen["decision"] > 0), seen
    assert 0 < seen["v2"] < EVENTS and 0 < seen["v3"] < EVENTS, seen
    assert seen["overridden"] > 0, seen


def test_the_challenger_never_changes_a_decision() -> None:
    """The same graph with the challenger removed gives the same scores and decisions."""
    cfg = load_config(ROOT / "pipelines" / "fraud" / "pipeline-graph.yaml").with_overrides(
        models_dir=str(ROOT / "models")
    )
    data = cfg.model_dump(by_alias=True)
    del data["decision"]["graph"]["nodes"]["v3"]
    without = type(cfg).model_validate(data)
    spec = load_pipeline(cfg.pipeline.module)
    metrics = WorkerMetrics(cfg.name)
    versions = [load_version(cfg, v, spec, metrics) for v in cfg.model.versions]
    with_c = build_decide_stage(cfg, versions, spec)
    without_c = build_decide_stage(without, versions, spec)
    records = [
        spec.schema.model_validate_json(e.value)
        for e in spec.make_generator(21).batch(5_000, 1_760_000_000_000)
    ]
    x = versions[0].preprocessor.transform(
        records, history_features(spec.state, [r.card_id for r in records], records)
    )
    cols = make_columns(records, with_c.fields)
    a = with_c.score(versions[0], x, cols)
    b = without_c.score(versions[0], x, make_columns(records, without_c.fields))
    assert a.node_scores is not None and np.isfinite(a.node_scores["v3"]).any()
    assert np.array_equal(a.score, b.score) and np.array_equal(a.codes, b.codes)


def _codes(reasons: list | None) -> set[str]:
    return {r.code for r in reasons or ()}


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
