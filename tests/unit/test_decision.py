"""The decide stage's logic: config checks with node paths, thresholds and overrides, reasons
and the explain hold-back, the prediction's new fields; start-up checks against the real
models; and the reasons merge through the real engine with a fake explainer."""

from __future__ import annotations

import copy
import json
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streaming.config import ConfigError, PipelineConfig, load_config
from streaming.decision import stage as stage_module
from streaming.decision.decide import apply_overrides, threshold_codes
from streaming.decision.reasons import Explanations, held_rows, merge, reasons_json
from streaming.dev.inprocess import InMemoryMessage, InstantSink
from streaming.engine.engine import Engine
from streaming.engine.explain_backlog import ExplainBacklog, Held, held_chunk
from streaming.engine.outputs import encode_predictions
from streaming.engine.types import Chunk
from streaming.errors import StartupError
from streaming.explain.types import Reason

ROOT = Path(__file__).resolve().parents[2]
GRAPH = ROOT / "pipelines" / "fraud" / "pipeline-graph.yaml"


def graph_raw() -> dict[str, Any]:
    raw = yaml.safe_load(GRAPH.read_text())
    raw["models_dir"] = str(ROOT / "models")
    return raw


def load_raw(tmp_path: Path, raw: dict[str, Any]) -> PipelineConfig:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def nodes(raw: dict[str, Any]) -> dict[str, Any]:
    return raw["decision"]["graph"]["nodes"]


def _unknown_input(raw: dict[str, Any]) -> None:
    nodes(raw)["blend"]["inputs"] = ["v1", "v9"]


def _cycle(raw: dict[str, Any]) -> None:
    nodes(raw)["blend"]["inputs"] = ["v1", "route"]


def _rules_as_score(raw: dict[str, Any]) -> None:
    nodes(raw)["route"]["else"] = "rules"


def _challenger_consumed(raw: dict[str, Any]) -> None:
    nodes(raw)["blend"]["inputs"] = ["v1", "v3"]


def _unknown_version(raw: dict[str, Any]) -> None:
    nodes(raw)["v2"]["version"] = "v7"


def _stacking_shape(raw: dict[str, Any]) -> None:
    nodes(raw)["blend"] = {
        "type": "ensemble",
        "method": "stacking",
        "inputs": ["v1", "v2"],
        "coefficients": [0.5],
    }


def _weights_shape(raw: dict[str, Any]) -> None:
    nodes(raw)["blend"]["weights"] = [1, 2, 3]


def _unknown_rule(raw: dict[str, Any]) -> None:
    nodes(raw)["decide"]["overrides"][0]["rule"] = "NO_SUCH_RULE"


def _unused(raw: dict[str, Any]) -> None:
    nodes(raw)["spare"] = {"type": "model", "version": "v1"}


def _two_decisions(raw: dict[str, Any]) -> None:
    nodes(raw)["again"] = {"type": "decision", "input": "v1"}


def _review_above_decline(raw: dict[str, Any]) -> None:
    nodes(raw)["decide"]["review_threshold"] = 0.9


def _unknown_node_type(raw: dict[str, Any]) -> None:
    nodes(raw)["v1"]["type"] = "modle"


def _condition_two_kinds(raw: dict[str, Any]) -> None:
    nodes(raw)["route"]["when"] = {"field": "amount", "rule": "CNP_RISKY_ABROAD"}


def _shadow_with_graph(raw: dict[str, Any]) -> None:
    raw["model"]["versions"][1]["shadow_share"] = 0.1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_unknown_input, "decision.graph.nodes.blend.inputs[1]: unknown node 'v9'"),
        (_cycle, "decision.graph.nodes.blend: cycle blend -> route -> blend"),
        (_rules_as_score, "decision.graph.nodes.route.else: 'rules' is a rules node"),
        (_challenger_consumed, "decision.graph.nodes.blend.inputs[1]: 'v3' is a challenger"),
        (_unknown_version, "decision.graph.nodes.v2.version: 'v7' is not in model.versions"),
        (_stacking_shape, "decision.graph.nodes.blend.coefficients: stacking needs one per"),
        (_weights_shape, "decision.graph.nodes.blend.weights: one per input (2), got 3"),
        (_unknown_rule, "decision.graph.nodes.decide.overrides[0].rule: no rule has the code"),
        (_unused, "decision.graph.nodes.spare: not used by the decision node 'decide'"),
        (_two_decisions, "decision.graph.nodes: needs exactly one node of type decision"),
        (_review_above_decline, "decision.graph.nodes.decide: review_threshold (0.9) is above"),
        (_unknown_node_type, "decision.graph.nodes.v1"),
        (_condition_two_kinds, "decision.graph.nodes.route.switch.when"),
        (_shadow_with_graph, "score it as a challenger node instead"),
    ],
)
def test_a_bad_graph_fails_at_load_naming_the_node(tmp_path, change, expected) -> None:
    raw = graph_raw()
    change(raw)
    with pytest.raises(ConfigError) as err:
        load_raw(tmp_path, raw)
    assert expected in str(err.value), str(err.value)


def test_the_shipped_configs_load_and_the_single_model_keeps_flagged_as_decline() -> None:
    graph = load_config(GRAPH)
    assert graph.decision.graph is not None
    single = load_config(ROOT / "pipelines" / "fraud" / "pipeline.yaml")
    review, decline = single.decision.thresholds(single.model.threshold)
    assert decline == single.model.threshold and review <= decline
    # no decision section at all: decline at model.threshold, no review band
    data = single.model_dump()
    data["decision"] = {}
    bare = PipelineConfig.model_validate(data)
    assert bare.decision.thresholds(bare.model.threshold) == (0.5, 0.5)


def test_thresholds_and_overrides() -> None:
    scores = np.array([0.1, 0.3, 0.5, 0.69, 0.7, 0.95])
    codes = threshold_codes(scores, 0.3, 0.7)
    assert codes.tolist() == [0, 1, 1, 1, 2, 2]
    allow = np.array([False, False, False, False, True, True])
    review = np.array([True, False, False, False, True, False])
    decline = np.array([False, True, False, False, False, False])
    # the first listed override that fired applies; review never lowers a decline
    out = apply_overrides(codes.copy(), [(review, 1), (allow, 0), (decline, 2)])
    assert out.tolist() == [1, 2, 1, 1, 2, 0]


def test_held_rows_keep_each_keys_order() -> None:
    keys = [b"a", b"b", b"a", b"c", b"b", b"a"]
    explain = np.array([False, True, False, False, False, False])
    held = held_rows(keys, explain)
    # b's explained row holds b's later row; a and c go out at once
    assert held.tolist() == [False, True, False, False, True, False]
    explain = np.array([True, False, False, False, False, False])
    assert held_rows(keys, explain).tolist() == [True, False, True, False, False, True]
    # keys still held from an earlier batch hold their rows here too, explained or not
    none = np.zeros(6, dtype=bool)
    assert held_rows(keys, none, {b"c"}).tolist() == [False, False, False, True, False, False]
    assert held_rows(keys, explain, {b"b"}).tolist() == [True, True, True, False, True, True]


def test_an_explain_backlog_is_due_when_the_lane_is_empty_full_or_old() -> None:
    now = [0.0]
    backlog = ExplainBacklog(max_rows=3, max_wait_s=0.025, clock=lambda: now[0])
    assert not backlog.due(0)  # nothing held
    chunk = Chunk(
        np.zeros((3, 1), np.float32),
        ["e0", "e1", "e2"],
        [0, 0, 0],
        [b"a", b"b", b"a"],
        [b""] * 3,
        [None] * 3,
        [None] * 3,  # type: ignore[list-item]  # no ledger: nothing is published here
        [0, 1, 2],
        0.0,
    )
    item = Held(
        chunk,
        [0, 2],
        np.array([0.9, 0.1]),
        np.array([2, 0], np.int8),
        None,
        {},
        [0],
        np.zeros((1, 1)),
        0,
    )
    backlog.add(item)
    assert backlog.keys == {b"a"} and backlog.to_explain == 1
    assert backlog.due(0)  # the worker keeps up: explain at once
    assert not backlog.due(100)  # backlogged: wait for more rows to share the call
    now[0] = 0.02
    assert backlog.wait_s() == pytest.approx(0.005)
    now[0] = 0.03
    assert backlog.due(100)  # waited long enough
    now[0] = 0.0
    backlog.add(item)
    backlog.add(item)
    assert backlog.due(100)  # enough rows
    assert backlog.take() == [item, item, item] and not backlog.keys and not backlog.due(0)
    one = held_chunk([item, item])
    assert one is not None and one.event_ids == ["e0", "e2", "e0", "e2"]
    assert one.offsets == [0, 2, 0, 2] and one.keys == [b"a", b"a", b"a", b"a"]


def test_merge_orders_by_weight_keeps_four_and_one_per_code() -> None:
    rules = [Reason("RULE_A", "a", 1.5), Reason("RULE_B", "b", 0.2)]
    explained = [
        Reason("AMOUNT", "x", 2.0),
        Reason("RULE_A", "again", 0.9),
        Reason("NIGHT", "y", 0.5),
        Reason("FAR", "z", 0.3),
    ]
    got = merge(rules, explained)
    assert [r.code for r in got] == ["AMOUNT", "RULE_A", "NIGHT", "FAR"]
    assert got[1].weight == 1.5


def test_prediction_json_carries_reasons_and_only_the_nodes_that_scored() -> None:
    out = encode_predictions(
        ["e1", "e2"],
        [1, 2],
        np.array([0.8, 0.1]),
        model="fraud",
        version="v2",
        threshold=0.5,
        scored_ms=3,
        worker="w",
        decisions=np.array([1, 0], dtype=np.int8),
        reasons={0: [Reason("BIG", 'amount "big"', 2.0)]},
        node_scores={"v1": np.array([0.5, 0.1]), "v2": np.array([0.9, np.nan])},
    )
    first, second = (json.loads(b) for b in out)
    assert first["decision"] == "review" and first["flagged"] is True
    assert first["reasons"] == [{"code": "BIG", "text": 'amount "big"', "weight": 2.0}]
    assert first["scores"] == {"v1": 0.5, "v2": 0.9}
    assert second["reasons"] == [] and second["scores"] == {"v1": 0.1}


@pytest.fixture(scope="module")
def models_built() -> None:
    assert (ROOT / "models" / "fraud" / "v3" / "metadata.json").exists(), "run `make models`"


def _engine(cfg: PipelineConfig, sink: InstantSink | None = None) -> Engine:
    return Engine(cfg, sink or InstantSink(keep=True))


@pytest.mark.parametrize(
    ("where", "change", "expected"),
    [
        (
            "rules",
            {"field": "amount_eur", "op": ">", "value": 1},
            "decision.graph.nodes.rules.rules[0].when: 'amount_eur' is not a field",
        ),
        (
            "rules",
            {"feature": "log_amount_x", "op": ">", "value": 1},
            "decision.graph.nodes.rules.rules[0].when: 'log_amount_x' is not a feature",
        ),
        (
            "rules",
            {"field": "country", "op": ">", "value": 3},
            "decision.graph.nodes.rules.rules[0].when: TypeError: op > compares numbers",
        ),
    ],
)
def test_a_graph_that_does_not_fit_the_pipeline_fails_at_start(
    tmp_path, models_built, where, change, expected
) -> None:
    raw = graph_raw()
    nodes(raw)[where]["rules"][0]["when"] = change
    cfg = load_raw(tmp_path, raw)
    engine = _engine(cfg)
    with pytest.raises(StartupError) as err:
        engine.start()
    engine.close()
    assert expected in str(err.value), str(err.value)


class _FakeExplainer:
    """Attributions = the features themselves (the merge is what is tested, not the math).
    At each call it notes whether a row later in the input than the first row it explains
    was already published: the proof that the batch's other rows did not wait for it."""

    def __init__(
        self, sink: InstantSink, topic: str, index: dict[bytes, int], order: dict[str, int]
    ) -> None:
        self.rows = 0
        self.ahead: list[bool] = []
        self._sink, self._topic, self._index, self._order = sink, topic, index, order

    def attributions(self, features: np.ndarray) -> np.ndarray:
        self.rows += features.shape[0]
        first = min(self._index[row.tobytes()] for row in features)
        # predictions only: a telemetry record comes too once its interval is due (a slow run)
        published = [
            json.loads(v)["event_id"] for t, v, _ in list(self._sink.records) if t == self._topic
        ]
        self.ahead.append(any(self._order[e] > first for e in published))
        return features


class _FakeCodes:
    def top(self, attributions: np.ndarray, k: int = 4) -> list[list[Reason]]:
        # the largest feature wins, weighted by its value; a weak second reason too
        out = []
        for row in attributions:
            j = int(np.argmax(row))
            out.append([Reason(f"FEATURE_{j}", "fake", float(row[j])), Reason("WEAK", "w", 0.01)])
        return out


def test_reasons_merge_with_a_fake_explainer_and_each_keys_order_holds(
    monkeypatch, models_built
) -> None:
    raw = graph_raw()
    raw["decision"]["review_threshold"] = 0.05  # explain a few percent of the rows
    # without the state stage: 37 keys with 160 events each in the same millisecond would
    # all look like bursts to it (and nearly every row would be explained)
    raw["pipeline"]["module"] = "loadtests.stateless_fraud"
    # telemetry records between the predictions, as a slow run has them
    raw.setdefault("worker", {})["telemetry_interval_s"] = 0.001
    cfg = PipelineConfig.model_validate(copy.deepcopy(raw))
    from streaming.pipeline import load_pipeline

    spec = load_pipeline(cfg.pipeline.module)
    events = spec.make_generator(5).batch(6_000, int(time.time() * 1000))
    # few keys, so that explained rows share keys with rows behind them in a batch
    msgs = [InMemoryMessage(e.value, b"k%d" % (i % 37), i) for i, e in enumerate(events)]
    meta = json.loads((ROOT / "models" / "fraud" / "v2" / "metadata.json").read_text())
    features = spec.make_preprocessor(meta["preprocessing"]).transform(
        [spec.schema.model_validate_json(e.value) for e in events]
    )
    index = {row.tobytes(): i for i, row in enumerate(features)}
    order = {e.event_id: i for i, e in enumerate(events)}
    sink = InstantSink(keep=True)
    explainer = _FakeExplainer(sink, cfg.topics.predictions, index, order)
    monkeypatch.setattr(
        stage_module, "make_explanations", lambda *_: Explanations(explainer, _FakeCodes())
    )
    engine = _engine(cfg, sink)
    engine.start()
    try:
        for i in range(0, len(msgs), 1000):
            engine.submit(msgs[i : i + 1000])
        assert engine.offsets.wait_drained(60)
    finally:
        engine.close()
    preds = [json.loads(v) for t, v, _ in sink.records if t == cfg.topics.predictions]
    assert sorted(p["event_id"] for p in preds) == sorted(e.event_id for e in events)
    explained = [p for p in preds if p["score"] >= 0.05]
    assert 0 < len(explained) < len(preds) / 4
    assert explainer.rows == len(explained)  # only rows at or above review were explained
    assert explainer.ahead and all(explainer.ahead)  # the others went out before it ran
    for p in preds:
        codes = [r["code"] for r in p["reasons"]]
        weights = [r["weight"] for r in p["reasons"]]
        assert len(codes) <= 4 and weights == sorted(weights, reverse=True)
        assert any(c.startswith("FEATURE_") for c in codes) == (p["score"] >= 0.05)
    # rules and attributions together on one prediction, each rule with its config weight
    rule_weight = {"CNP_RISKY_ABROAD": 1.5, "AMOUNT_FAR_ABOVE_USUAL": 1.0}
    both = [p for p in explained if set(rule_weight) & _codes(p)]
    assert both
    for p in both:
        assert any(c.startswith("FEATURE_") for c in _codes(p))
        for r in p["reasons"]:
            if r["code"] in rule_weight:
                assert r["weight"] == rule_weight[r["code"]]
    # the summary's counts (streaming demo) are the published records'
    decided = Counter(p["decision"] for p in preds)
    assert engine.stats.decisions() == {d: decided[d] for d in ("approve", "review", "decline")}
    assert engine.stats.reasons() == Counter(r["code"] for p in preds for r in p["reasons"])
    # per key, predictions left in input order, explained or not
    order = {e.event_id: i for i, e in enumerate(events)}
    by_key: dict[bytes, list[int]] = defaultdict(list)
    keys = {e.event_id: msgs[i].key() for i, e in enumerate(events)}
    for p in preds:
        by_key[keys[p["event_id"]]].append(order[p["event_id"]])
    assert all(seq == sorted(seq) for seq in by_key.values())


def _codes(p: dict[str, Any]) -> set[str]:
    return {r["code"] for r in p["reasons"]}


def test_the_monitor_counts_decision_shares_per_version_and_window() -> None:
    from streaming.rollout.monitor.judge import version_stats
    from streaming.rollout.monitor.windows import WindowStore

    store = WindowStore(1000, 0, 0.5, {})

    def pred(version: str, decision: str | None, at: int) -> dict[str, Any]:
        p = {"version": version, "score": 0.1, "scored_ms": at, "ts_ms": at - 5}
        if decision is not None:
            p["decision"] = decision
        return p

    store.add_predictions(
        [pred("v2", "approve", 10)] * 6
        + [pred("v2", "review", 20)] * 3
        + [pred("v2", "decline", 30)]
        + [pred("v1", "approve", 40), pred("v1", None, 50)]  # an older worker: no decision
        + [pred("v2", "decline", 1500)]  # the next window
    )
    first, second = store.close_all()
    assert version_stats(first.versions["v2"], None)["decision_shares"] == {
        "approve": 0.6,
        "decline": 0.1,
        "review": 0.3,
    }
    assert version_stats(first.versions["v1"], None)["decision_shares"] == {"approve": 1.0}
    assert second.versions["v2"].decision_shares == {"decline": 1.0}


def test_avro_predictions_carry_the_new_fields_and_old_readers_still_read_them() -> None:
    import io

    import fastavro

    from streaming.formats.outputs import PREDICTION_AVSC, AvroPredictions

    new = fastavro.parse_schema(json.loads(PREDICTION_AVSC.read_text()))
    old_fields = ("event_id", "score", "flagged", "ts_ms", "scored_ms", "model", "version")
    old = fastavro.parse_schema(
        {
            **json.loads(PREDICTION_AVSC.read_text()),
            "fields": [
                f
                for f in json.loads(PREDICTION_AVSC.read_text())["fields"]
                if f["name"] in (*old_fields, "worker")
            ],
        }
    )
    out = AvroPredictions(7).encode(
        ["e1"],
        [1],
        np.array([0.8]),
        model="fraud",
        version="v2",
        threshold=0.5,
        scored_ms=3,
        worker="w",
        decisions=np.array([2], dtype=np.int8),
        reasons={0: [Reason("BIG", "big", 2.0)]},
        node_scores={"v1": np.array([0.5]), "v2": np.array([np.nan])},
    )
    body = out[0][5:]  # past the Confluent header
    got = fastavro.schemaless_reader(io.BytesIO(body), new, new)
    assert got["decision"] == "decline" and got["scores"] == {"v1": 0.5}
    assert got["reasons"] == [{"code": "BIG", "text": "big", "weight": 2.0}]
    # a consumer on the schema before decisions reads the new records (fields skipped) ...
    assert fastavro.schemaless_reader(io.BytesIO(body), new, old)["score"] == 0.8
    # ... and one on the new schema reads old records (defaults filled in)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old, {**{k: got[k] for k in old_fields}, "worker": "w"})
    back = fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), old, new)
    assert (back["decision"], back["reasons"], back["scores"]) == (None, [], {})


def test_a_non_finite_challenger_score_is_left_out_and_a_models_refuses_the_row() -> None:
    from streaming.decision.config import GraphConfig
    from streaming.decision.graph import DecisionGraph

    config = GraphConfig.model_validate(
        {
            "nodes": {
                "a": {"type": "model", "version": "va"},
                "c": {"type": "challenger", "version": "vc"},
                "d": {"type": "decision", "input": "a"},
            }
        }
    )

    def broken(x: np.ndarray) -> np.ndarray:
        return np.where(x[:, 0] > 0, np.nan, 0.2).astype(np.float32)

    x = np.array([[1.0], [-1.0]], dtype=np.float32)
    fine = DecisionGraph(
        config, {"va": lambda x: np.full(len(x), 0.9), "vc": broken}, ("f",), (0.5, 0.8)
    )
    got = fine.run(x, None)
    assert got.score.tolist() == [0.9, 0.9] and got.codes.tolist() == [2, 2]
    assert got.node_scores is not None and np.isnan(got.node_scores["c"][0])
    refused = DecisionGraph(config, {"va": broken, "vc": broken}, ("f",), (0.5, 0.8)).run(x, None)
    assert np.isnan(refused.score[0]) and refused.score[1] == pytest.approx(0.2)


def test_reasons_json_writes_what_json_dumps_writes() -> None:
    def reference(reasons: list[Reason]) -> str:
        rows = [{"code": r.code, "text": r.text, "weight": round(r.weight, 6)} for r in reasons]
        return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))

    rng = random.Random(1)
    texts = ["amount far above this card's 30-day average", 'caf\u00e9 "q" \\ \n\u2028', ""]
    weights = [1.23456789, 2e-7, 3e17, 2.0, -0.5, float("nan"), float("inf")]
    for _ in range(2_000):
        given = [
            Reason(rng.choice(["SPREE", "\u00e9_X"]), rng.choice(texts), rng.choice(weights))
            for _ in range(rng.randint(1, 4))
        ]
        assert reasons_json(given) == reference(given)
    assert reasons_json([]) == "[]"
