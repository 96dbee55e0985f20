"""The worker end to end on the embedded broker with the real fraud models.

Every check is by event id: every valid event gets a prediction, every invalid one a dead
letter with the right stage, and duplicates are counted, never assumed away.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka.topics import create_topics
from streaming.pipeline import SyntheticEvent
from tests.kafka_helpers import (
    Record,
    read_topic,
    start_worker,
    write_config,
)

pytestmark = pytest.mark.integration


def outputs_by_id(preds: list[Record]) -> Counter[str]:
    return Counter(json.loads(r.value)["event_id"] for r in preds)


def check_every_event_accounted(
    events: list[SyntheticEvent], preds: list[Record], dead: list[Record]
) -> tuple[int, int]:
    """No loss; returns (duplicate predictions, duplicate dead letters)."""
    valid = {e.event_id for e in events if e.invalid_kind is None}
    invalid = Counter(e.value for e in events if e.invalid_kind is not None)
    got = outputs_by_id(preds)
    missing = valid - set(got)
    assert not missing, (
        f"{len(missing)} valid events have no prediction, e.g. {sorted(missing)[:3]}"
    )
    assert set(got) <= valid, "a prediction for an event that was never produced"
    got_dead = Counter(r.value for r in dead)
    lost_dead = set(invalid) - set(got_dead)
    assert not lost_dead, f"{len(lost_dead)} invalid events have no dead letter"
    return sum(got.values()) - len(got), sum(got_dead.values()) - len(got_dead)


def test_clean_run_one_output_per_event_with_the_right_stage(broker, models_built, tmp_path):
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    produced = produce_events(
        cfg,
        6_000,
        invalid_ratio=0.05,
        seed=11,
        keep=True,
        headers=[("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
    )
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    assert worker.wait(120) == 0, worker.log()

    valid = [e for e in produced.events if e.invalid_kind is None]
    invalid = [e for e in produced.events if e.invalid_kind is not None]
    assert len(invalid) > 100 and {e.expected_stage for e in invalid} == {"decode", "validate"}
    preds = read_topic(cfg, cfg.topics.predictions, len(valid))
    dead = read_topic(cfg, cfg.topics.dead_letters, len(invalid))

    # exactly one prediction per valid event, one dead letter per invalid one
    assert outputs_by_id(preds) == Counter(e.event_id for e in valid)
    assert Counter(r.value for r in dead) == Counter(e.value for e in invalid)

    # the prediction contract: key, headers, fields
    by_id = {e.event_id: e for e in valid}
    for r in preds:
        body = json.loads(r.value)
        event = by_id[body["event_id"]]
        assert r.key == event.key
        assert r.headers["traceparent"].startswith(b"00-4bf92f")
        assert body["model"] == "fraud" and body["version"] == "v2"
        assert 0.0 <= body["score"] <= 1.0
        assert body["ts_ms"] == json.loads(event.value)["ts_ms"]
        assert body["scored_ms"] >= body["ts_ms"]
        assert body["flagged"] == (body["score"] >= 0.5)

    # the dead-letter contract: original bytes and key, stage, reason, source coordinates
    by_value = {e.value: e for e in invalid}
    for r in dead:
        event = by_value[r.value]
        assert r.key == event.key
        assert r.headers["dead_letter.stage"].decode() == event.expected_stage, event.invalid_kind
        assert len(r.headers["dead_letter.reason"]) > 5
        assert r.headers["dead_letter.topic"].decode() == cfg.topics.input
        assert int(r.headers["dead_letter.offset"]) >= 0
        assert r.headers["traceparent"].startswith(b"00-")

    # logs: JSON lines with the worker id; dead letters carry the trace id, within a budget;
    # no event value (card data) ever appears
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert lines and all(line["worker"] for line in lines)
    dl_lines = [line for line in lines if line["msg"] == "dead letter"]
    assert dl_lines and all(
        line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" for line in dl_lines
    )
    assert len(dl_lines) < len(invalid)  # a flood of bad events is not a flood of logs
    text = worker.log()
    assert not [e for e in valid[:500] if json.loads(e.value)["card_id"] in text]

    # the fraud signal survives the whole path: flagged events are mostly real fraud
    scores = {json.loads(r.value)["event_id"]: json.loads(r.value)["score"] for r in preds}
    fraud = [scores[e.event_id] for e in valid if e.label == 1]
    legit = [scores[e.event_id] for e in valid if e.label == 0]
    assert fraud and sum(fraud) / len(fraud) > 2 * sum(legit) / len(legit)


@pytest.mark.parametrize("when", ["auto", "deferred"])
def test_predictions_for_one_key_keep_input_order(broker, models_built, tmp_path, when):
    """Explained rows in their batch (auto: the C explainer) and held back for a later
    explainer call (deferred: each held row holds its key's later rows): in order either way."""
    # Few cards, many events each, so every key has a long history to keep in order.
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **{
            "batching.max_batch_size": 32,
            "batching.preferred_batch_sizes": [8],
            "reasons.when": when,
        },
    )
    create_topics(cfg)
    produced = ProduceResult()
    import pipelines.fraud as fraud
    from pipelines.fraud.generator import FraudGenerator
    from streaming.pipeline import PipelineSpec

    spec = fraud.PIPELINE
    few_cards = PipelineSpec(
        **{
            **{f: getattr(spec, f) for f in spec.__dataclass_fields__},
            "make_generator": lambda seed: FraudGenerator(seed, n_cards=40, live_cards=40),
        }
    )
    produced = produce_events(cfg, 8_000, seed=5, keep=True, pipeline=few_cards)
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    assert worker.wait(120) == 0, worker.log()
    preds = read_topic(cfg, cfg.topics.predictions, 8_000)

    expected: dict[bytes, list[str]] = defaultdict(list)
    for e in produced.events:
        expected[e.key].append(e.event_id)
    seen: dict[bytes, list[str]] = defaultdict(list)
    for r in sorted(preds, key=lambda r: (r.partition, r.offset)):
        seen[r.key].append(json.loads(r.value)["event_id"])
    assert len(expected) == 40
    for key, ids in expected.items():
        assert seen[key] == ids, f"order broken for {key!r}"
    explained = [json.loads(r.value) for r in preds]
    assert sum(1 for p in explained if p["reasons"]) >= 20  # explanations did run


def _kcat_env(tmp_path: Path) -> dict[str, str]:
    """Debian's kcat links an old librdkafka that cannot talk to the embedded broker; point it
    at the newer copy bundled in the confluent-kafka wheel (README, Development)."""
    libs = glob.glob(
        os.path.join(
            os.path.dirname(confluent_kafka.__file__),
            "..",
            "confluent_kafka.libs",
            "librdkafka*.so*",
        )
    )
    assert libs, "no librdkafka in the confluent-kafka wheel"
    libdir = tmp_path / "kcat-lib"
    libdir.mkdir()
    (libdir / "librdkafka.so.1").symlink_to(os.path.realpath(libs[0]))
    return {**os.environ, "LD_LIBRARY_PATH": str(libdir)}


def test_events_from_another_client_kcat_are_scored(broker, models_built, tmp_path):
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: make test installs it (apt-get install kcat)"
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    from pipelines.fraud.generator import FraudGenerator

    events = [
        e for e in FraudGenerator(99).batch(300, int(time.time() * 1000)) if e.invalid_kind is None
    ]
    lines = b"".join(e.key + b"\t" + e.value + b"\n" for e in events)
    subprocess.run(
        [
            kcat,
            "-P",
            "-b",
            broker.bootstrap,
            "-t",
            cfg.topics.input,
            "-K",
            "\t",
            "-H",
            "traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ],
        input=lines,
        env=_kcat_env(tmp_path),
        check=True,
        timeout=60,
    )
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    assert worker.wait(120) == 0, worker.log()
    preds = read_topic(cfg, cfg.topics.predictions, len(events))
    assert outputs_by_id(preds) == Counter(e.event_id for e in events)
    assert all(r.headers["traceparent"].startswith(b"00-0af76519") for r in preds)


def test_max_events_stops_there_and_the_rest_is_read_next_time(broker, models_built, tmp_path):
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    produced = produce_events(cfg, 3_000, seed=41, keep=True)
    first = start_worker(path, tmp_path, "--max-events", "1000")
    assert first.wait(120) == 0, first.log()
    assert '"consumed": 1000' in first.log()
    second = start_worker(path, tmp_path, "--idle-exit", "3")
    assert second.wait(120) == 0, second.log()
    preds = read_topic(cfg, cfg.topics.predictions, 3_000)
    assert outputs_by_id(preds) == Counter(e.event_id for e in produced.events)


def test_start_up_fails_clearly_without_topics_broker_or_models(broker, models_built, tmp_path):
    path, _ = write_config(tmp_path, broker.bootstrap)
    no_topics = start_worker(path, tmp_path)
    assert no_topics.wait(60) == 2
    assert "topics missing" in no_topics.log() and "streaming topics create" in no_topics.log()

    path, _ = write_config(tmp_path, "127.0.0.1:1")
    no_broker = start_worker(path, tmp_path)
    assert no_broker.wait(60) == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in no_broker.log()

    path, cfg = write_config(tmp_path, broker.bootstrap, models_dir=str(tmp_path / "none"))
    create_topics(cfg)
    no_models = start_worker(path, tmp_path)
    assert no_models.wait(60) == 2
    assert "make models" in no_models.log()

    # a state changelog made by hand with too few partitions: one is needed per input partition
    path, cfg = write_config(tmp_path, broker.bootstrap, **{"topics.state": "narrow.state"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("narrow.state", 1, 1)])["narrow.state"].result(15)
    create_topics(cfg)
    narrow = start_worker(path, tmp_path)
    assert narrow.wait(60) == 2
    assert "narrow.state has 1 partitions" in narrow.log() and "one per input" in narrow.log()


def test_a_model_that_does_not_fit_the_preprocessing_stops_the_start(
    broker, models_built, tmp_path
):
    import torch

    from models.export import export_model

    wrong = torch.nn.Sequential(torch.nn.Linear(5, 1), torch.nn.Sigmoid())
    meta = json.loads((models_built / "v2" / "metadata.json").read_text())
    export_model(
        wrong,
        tmp_path / "m" / "fraud" / "v2",
        name="fraud",
        version="v2",
        feature_names=[f"x{i}" for i in range(5)],
        preprocessing=meta["preprocessing"],
        metrics={},
    )
    path, cfg = write_config(tmp_path, broker.bootstrap, models_dir=str(tmp_path / "m"))
    create_topics(cfg)
    worker = start_worker(path, tmp_path)
    assert worker.wait(60) == 2
    log = worker.log()
    from pipelines.fraud import PIPELINE

    width = len(PIPELINE.make_preprocessor(meta["preprocessing"]).feature_names)
    assert "expects 5 inputs" in log and f"makes {width}" in log and "make models" in log
