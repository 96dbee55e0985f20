"""A real Prometheus scrapes a real worker on the embedded broker: the numbers it sees are the
run's, and every expression of the dashboard and of the alert rules returns data there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.fraud.faulty import build_faulty
from streaming.dev.broker import free_port
from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import ROOT, start_worker, write_config
from tests.promql import RULES, dashboard_exprs, probe, rule_exprs

pytestmark = pytest.mark.integration

EVENTS = 6_000


class Prometheus:
    """Debian's prometheus in a child process, scraping every second."""

    def __init__(self, tmp: Path, target: str, *more: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make system-deps` installs it"
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"  # the file says 30s; a 40 s test needs points sooner
        (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [
                {"job_name": "streaming-workers", "static_configs": [{"targets": [target]}]},
                *(
                    {"job_name": f"streaming-monitor-{i}", "static_configs": [{"targets": [m]}]}
                    for i, m in enumerate(more)
                ),
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = (tmp / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: Any) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
            exc.close()
        return body

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = self.api("query", **params)
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/-/ready", timeout=1
                ) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.log.close()


def value(result: list[dict[str, Any]]) -> float:
    assert result, "no data"
    return float(result[0]["value"][1])


def test_prometheus_sees_the_run_and_every_expression_returns_data(
    broker, models_built, tmp_path, measured
):
    flaky = build_faulty("flaky", models_built / "v2", tmp_path / "v8", "v8")
    metrics_port = free_port()
    monitor_port = free_port()
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **{
            "model.versions": [
                {"version": "v2", "weight": 80},
                {"version": "v8", "weight": 20, "path": str(flaky)},
            ],
            "monitor.labels": True,
            "monitor.metrics_port": monitor_port,  # its label-quality gauges
            "monitor.quality_interval_s": 1,
        },
    )
    create_topics(cfg)
    worker = start_worker(path, tmp_path, "--metrics-port", str(metrics_port), "--idle-exit", "60")
    monitor = subprocess.Popen(
        [sys.executable, "-m", "streaming", "monitor", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    prom = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}", f"127.0.0.1:{monitor_port}")
    try:
        prom.wait_ready()
        worker.wait_for_log("assigned", 60)
        started = time.time()
        result: list[ProduceResult] = []
        producer = threading.Thread(
            target=lambda: result.append(
                produce_events(
                    cfg,
                    EVENTS,
                    rate=400,
                    invalid_ratio=0.02,
                    seed=9,
                    keep=True,
                    labels=True,  # chargeback delays of weeks, in seconds
                    label_time_scale=5e6,
                )
            )
        )
        producer.start()
        producer.join(60)
        produced = result[0]
        valid = sum(1 for e in produced.events if e.label is not None)
        mid = started + (time.time() - started) * 0.6

        # The predictions counter reaches what the run produced (minus the flaky NaN rows).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            total = prom.query("sum(streaming_predictions_total)")
            inference = prom.query('sum(streaming_dead_letters_total{stage="inference"})')
            if total and inference and value(total) + value(inference) >= valid:
                break
            time.sleep(1)
        predictions, inference_dl = value(total), value(inference)
        assert predictions + inference_dl == valid
        assert 0 < inference_dl < 0.05 * valid
        dead = value(prom.query("sum(streaming_dead_letters_total)"))
        assert dead == produced.invalid + inference_dl

        rate = value(prom.query("sum(rate(streaming_predictions_total[5s]))", at=mid))
        # against the rate the producer measured itself achieving (400/s asked; a busy machine
        # may send slower), not against the rate asked for
        achieved = predictions / produced.seconds
        assert 0.5 * achieved < rate < 1.5 * achieved, (rate, achieved)
        batches = prom.query("sum by (version) (streaming_batch_size_count)")
        assert {r["metric"]["version"] for r in batches} == {"v2", "v8"}
        assert all(float(r["value"][1]) > 0 for r in batches)
        buckets = prom.query('count by (version) (streaming_batch_size_bucket{le!="+Inf"})')
        assert all(float(r["value"][1]) >= 5 for r in buckets), buckets
        lag = prom.query("streaming_consumer_lag")
        assert sorted(int(r["metric"]["partition"]) for r in lag) == [0, 1, 2, 3]

        # Every dashboard expression returns data at a moment of the run: mid-run, or (the
        # monitor's label gauges, set once it has joined labels to predictions, which a monitor
        # reading behind on a busy machine may not have done by mid-run) by its end.
        empty = []
        dashboard = dashboard_exprs(
            {"pipeline": cfg.name, "version": ".*", "__rate_interval": "10s"}
        )
        deadline = time.monotonic() + 30
        for title, expr in dashboard:
            found = prom.query(expr, at=mid)
            while not found and time.monotonic() < deadline:
                time.sleep(1)
                found = prom.query(expr)
            if not found:
                empty.append(f"dashboard {title}: {expr}")
        # Every rule parses and its quantity returns data; every rule evaluates cleanly.
        rules = rule_exprs()
        for name, expr, is_alert in rules:
            prom.query(expr)  # parses (asserted in query)
            if not prom.query(probe(expr) if is_alert else expr):
                empty.append(f"rule {name}: {probe(expr) if is_alert else expr}")
        assert not empty, "expressions with no data:\n" + "\n".join(empty)
        loaded = prom.api("rules")["data"]["groups"]
        health = {r["name"]: r["health"] for g in loaded for r in g["rules"]}
        assert len(health) == len(rules)
        assert set(health.values()) == {"ok"}, health
        measured(
            f"\n[prometheus] predictions {predictions:.0f} + inference dead letters "
            f"{inference_dl:.0f} = {valid} valid events; all dead letters {dead:.0f}; "
            f"rate at mid-run {rate:.0f}/s (run's mean {achieved:.0f}/s); {len(dashboard)} "
            "dashboard and "
            f"{len(rules)} rule expressions return data; rules healthy"
        )
    finally:
        prom.stop()
        worker.stop()
        monitor.terminate()
        monitor.wait(30)
