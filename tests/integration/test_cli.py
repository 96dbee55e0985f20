"""The commands as a user types them: broker, topics create, produce, demo."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from streaming.config import load_config
from streaming.dev.broker import free_port
from tests.kafka_helpers import ROOT, read_topic, write_config, write_raw_config

pytestmark = pytest.mark.integration


def streaming(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def test_broker_command_prints_its_address_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in first, first
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_topics_create_then_produce_with_invalid_share(broker, tmp_path) -> None:
    path, cfg = write_config(tmp_path, broker.bootstrap)
    created = streaming("topics", "create", "-c", str(path), "--partitions", "3")
    assert created.returncode == 0, created.stderr
    # with shadow, verdicts, alerts, labels and quality (monitor.labels adds two changelogs),
    # and the state stage's changelog
    assert created.stdout.count("created") == 11
    assert f"{cfg.topics.input}.state.{cfg.kafka.group}" in created.stdout
    again = streaming("topics", "create", "-c", str(path))
    assert again.stdout.count("exists") == 11  # idempotent

    produced = streaming(
        "produce",
        "-c",
        str(path),
        "--events",
        "2000",
        "--invalid-ratio",
        "0.1",
        "--rate",
        "4000",
        "--seed",
        "3",
    )
    assert produced.returncode == 0, produced.stderr
    assert "produced 2,000 events" in produced.stderr
    records = read_topic(cfg, cfg.topics.input, 2000)
    assert len(records) == 2000 and {r.partition for r in records} == {0, 1, 2}


def test_commands_fail_clearly(tmp_path) -> None:
    path = write_raw_config(tmp_path, f"127.0.0.1:{free_port()}", **{"batching.max_delay_ms": -1})
    bad = streaming("run", "-c", str(path))
    assert bad.returncode == 2
    assert "batching.max_delay_ms" in bad.stderr and "greater than or equal to 0" in bad.stderr
    missing = streaming("produce", "-c", str(tmp_path / "nope.yaml"), "--events", "1")
    assert missing.returncode == 2 and "no such config file" in missing.stderr


def test_demo_runs_bounded_and_summarises(tmp_path) -> None:
    started = time.monotonic()
    demo = streaming(
        "demo", "--events", "6000", "--live-events", "2000", "--live-rate", "1000", timeout=240
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "== streaming demo summary ==" in out
    assert "accounted for     6,000 of 6,000 events" in out
    assert "dead letters" in out and "decode" in out and "validate" in out
    assert "drain throughput" in out and "live latency      p50" in out
    # decisions: every prediction has one; reasons: the shipped codes of pipeline.yaml
    predictions = int(re.search(r"^predictions\s+([\d,]+)", out, re.M)[1].replace(",", ""))
    shares = re.search(r"^decisions\s+(.*)$", out, re.M)[1]
    counts = {
        d: int(n.replace(",", ""))
        for d, n in re.findall(r"(approve|review|decline) \S+ \(([\d,]+)\)", shares)
    }
    assert sum(counts.values()) == predictions, (counts, predictions)
    if counts.get("review", 0) + counts.get("decline", 0):
        codes = load_config(ROOT / "pipelines" / "fraud" / "pipeline.yaml").reasons.codes
        top = re.search(r"^top reasons\s+(.*)$", out, re.M)[1]
        assert re.findall(r"([A-Z_]+) \d+", top), top
        assert set(re.findall(r"([A-Z_]+) \d+", top)) <= set(codes), top
    assert time.monotonic() - started < 240
    # The summary is the last word: no Kafka client outlives the broker to log its disconnect
    # (librdkafka's own lines start with %LEVEL|, e.g. "%6|...|FAIL|...: Disconnected").
    assert out.rstrip().splitlines()[-1].startswith("wall time"), out[-500:]
    assert not re.search(r"^%\d\|", demo.stderr, re.MULTILINE), demo.stderr[-2000:]


def test_run_imports_neither_faust_nor_the_dev_tools_nor_the_load_tests(
    broker, tmp_path, models_built
) -> None:
    """`streaming run` stays lean: a worker pod loads only the event path. Every module the
    process imports over its whole life is listed by -X importtime (on stderr)."""
    from streaming.dev.produce import produce_events
    from streaming.kafka.topics import create_topics

    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    produce_events(cfg, 200, seed=5)
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "streaming",
            "run",
            "-c",
            str(path),
            "--max-events",
            "200",
            "--idle-exit",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "streaming.worker" in imported and "streaming.engine.engine" in imported
    heavy = sorted(
        m
        for m in imported
        if m.split(".")[0] in ("faust", "aiokafka", "loadtests", "matplotlib", "opentelemetry")
        or m.startswith(("streaming.dev", "streaming.rollout.monitor"))
        # pipeline.format json: no schema-registry client, no Avro (streaming.formats.select)
        or m.startswith(("confluent_kafka.schema_registry", "fastavro", "httpx", "authlib"))
        or m in ("streaming.formats.registry", "streaming.formats.avro")
    )
    assert heavy == [], heavy
