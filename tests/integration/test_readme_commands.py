"""Docs that run: every command README.md shows runs as written against the configs the repo
ships (pipelines/fraud/*.yaml), so that a reader who copies one is never the first to find it
broken.

Commands are taken from the README itself, so a new one is checked without anyone remembering
to: every line of a ```sh block (``\\`` continuations joined, ``# ...`` comments dropped), every
inline code span that starts like a command line (``make ``, ``.venv/bin/``, ``python``,
``promtool ``, ``helm ``), and the synopsis rows of the CLI table (``| `streaming ...` |``).

Blocks and spans are looked up in ``COMMANDS``, which says how each is checked; a README command
missing from it fails the test, so nobody adds an unchecked command. Commands that are runnable
as written run as written, with only what cannot be shared changed: ``-c <shipped config>``
becomes a copy of that config with its own topics and group on the session's embedded broker,
fixed ports become free ones. Placeholders (``[--auto-rollback]``, ``CONFIG``, ``kafka:9092``)
and commands that take minutes get the bounded arguments the table names. The synopsis rows are
checked against ``streaming <command> --help``: the command exists and takes every option shown.

Everything runs as subprocesses of the worktree's code (PYTHONPATH is set to this checkout), so
the test depends on no module inside ``streaming/``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHIPPED = ROOT / "pipelines" / "fraud"
INLINE_PREFIXES = ("make ", ".venv/bin/", "python ", "python3 ", "promtool ", "helm ")
"""Inline code spans that start like this are commands; the rest (`streaming run`, `kill -9`,
config keys) are names in prose."""


# ---------------------------------------------------------------- extracting the README's commands


def _normal(command: str) -> str:
    """One spelling per command: shell words joined by single spaces, comments dropped."""
    return " ".join(shlex.split(command, comments=True))


def fenced_commands(text: str) -> list[str]:
    """Every command line of the ```sh blocks."""
    out = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if command := _normal(line):
                out.append(command)
    return out


def inline_commands(text: str) -> list[str]:
    """Inline code spans outside the fenced blocks that are command lines (may wrap a line)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    spans = (" ".join(s.split()) for s in re.findall(r"(?<!`)`([^`]+)`(?!`)", prose))
    return [_normal(s) for s in spans if s.startswith(INLINE_PREFIXES)]


def synopsis_rows(text: str) -> list[str]:
    """The CLI table's first column: `streaming COMMAND ...` synopses (``\\|`` unescaped)."""
    return [
        m.replace("\\|", "|")
        for m in re.findall(r"^\| `(streaming (?:[^`\\]|\\.)*)` \|", text, flags=re.M)
    ]


def readme_commands() -> list[str]:
    """The README's commands in order of appearance, each once."""
    text = README.read_text()
    return list(dict.fromkeys([*fenced_commands(text), *inline_commands(text)]))


# ---------------------------------------------------------------- running them


@dataclass(frozen=True)
class Ctx:
    """What a check needs: the README's words, the session broker, a scratch folder."""

    argv: list[str]
    bootstrap: str
    tmp: Path


def _env(bootstrap: str) -> dict[str, str]:
    """This checkout's code first (the venv's editable install may point at another tree), and
    the session broker for anything that reads STREAMING_BOOTSTRAP."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
        "STREAMING_BOOTSTRAP": bootstrap,
        "PYTHONUNBUFFERED": "1",
    }


def run(ctx: Ctx, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run to the end from the repo root; exit 0 required, the output's tail shown if not."""
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=_env(ctx.bootstrap),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"{shlex.join(argv)} exited {done.returncode}\n"
        f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}"
    )
    return done


def serve(ctx: Ctx, argv: list[str], ready: Callable[[str], bool], timeout: float = 90) -> str:
    """Start a long-running command, wait until ``ready(log)``, SIGTERM it, require exit 0 (the
    README promises SIGTERM drains and exits 0); returns its log."""
    log_path = ctx.tmp / f"serve-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=_env(ctx.bootstrap), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready(log_path.read_text(errors="replace")):
            assert proc.poll() is None, f"{argv} exited {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, (
                f"{argv} not ready in {timeout} s:\n" + (log_path.read_text()[-3000:])
            )
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        assert code == 0, f"{argv} exited {code} on SIGTERM:\n{log_path.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (a local test URL)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def fresh_config(ctx: Ctx, shipped: str) -> tuple[str, dict[str, Any]]:
    """A copy of a shipped config with topics and a group of its own on the session broker:
    everything the README relies on (versions, weights, batching) is the shipped file's."""
    assert (ROOT / shipped).is_file(), f"{shipped}: the README names a config the repo lacks"
    raw = yaml.safe_load((ROOT / shipped).read_text())
    tag = uuid.uuid4().hex[:8]
    raw["kafka"]["bootstrap"] = ctx.bootstrap
    raw["kafka"]["group"] = f"readme-{tag}"
    for key in ("input", "predictions", "dead_letters", "telemetry", "control"):
        raw["topics"][key] = f"readme-{tag}.{key}"
    raw["models_dir"] = str(ROOT / raw.get("models_dir", "models"))
    path = ctx.tmp / f"{tag}-{Path(shipped).name}"
    path.write_text(yaml.safe_dump(raw))
    return str(path), raw


def swap(argv: list[str], flag: str, value: str) -> list[str]:
    """The argument after ``flag`` replaced (the flag must be there: the table's key says so)."""
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def with_fresh_config(ctx: Ctx, topics: bool = True) -> tuple[list[str], dict[str, Any]]:
    """The README's argv with ``-c`` pointing at a fresh copy of the config it names, whose
    topics are created first with the README's own ``topics create``."""
    config, raw = fresh_config(ctx, ctx.argv[ctx.argv.index("-c") + 1])
    if topics:
        run(ctx, [".venv/bin/streaming", "topics", "create", "-c", config])
    return swap(ctx.argv, "-c", config), raw


def read_records(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[bytes]:
    """A topic's values from the start until ``expected`` came and nothing more for a second."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"readme-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 500,  # a reader whose latency does not matter (DESIGN.md)
        }
    )
    consumer.subscribe([topic])
    out: list[bytes] = []
    deadline, last_new = time.monotonic() + timeout, time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(num_messages=5000, timeout=0.5) if not m.error()]
            out += [m.value() or b"" for m in batch]
            if batch:
                last_new = time.monotonic()
            elif len(out) >= expected and time.monotonic() - last_new > 1.0:
                break
    finally:
        consumer.close()
    return out


# ---------------------------------------------------------------- a check per README command


def check_make_dry_run(target: str, expect: str) -> Callable[[Ctx], None]:
    """``make -nB``: the target exists and would run ``expect``; running it would set up a venv,
    train models or run the whole suite (minutes, and pip installs). -B prints the recipe even
    when the target is up to date (built models: "Nothing to be done for 'models'")."""

    def check(ctx: Ctx) -> None:
        assert ctx.argv == ["make", target]
        done = run(ctx, ["make", "-nB", target])
        assert expect in done.stdout, done.stdout

    return check


def check_make_help(ctx: Ctx) -> None:
    """`make help` is how the README sends readers to the rest: it must list what it names."""
    done = run(ctx, ctx.argv)
    for target in ("run", "test", "models", "test-unit", "lint", "format"):
        assert re.search(rf"^\s+{target}\s", done.stdout, flags=re.M), (target, done.stdout)


def check_route(ctx: Ctx) -> None:
    argv, raw = with_fresh_config(ctx)
    done = run(ctx, argv)
    assert "routing for fraud written to" in done.stdout, done.stdout
    (value,) = read_records(ctx.bootstrap, raw["topics"]["control"], 1)
    record = json.loads(value)
    assert record["weights"] == {"v1": 90, "v2": 10} and record["shadows"] == {"v3": 0.2}, record


def check_monitor(ctx: Ctx) -> None:
    argv, _ = with_fresh_config(ctx)
    cut = next(i for i, a in enumerate(argv) if a.startswith("["))
    assert argv[cut:] == ["[--auto-rollback]", "[--windows", "N]", "[--duration", "S]"]
    run(ctx, [*argv[:cut], "--auto-rollback", "--windows", "1", "--duration", "4"], timeout=90)


def check_broker(ctx: Ctx) -> None:
    port = free_port()
    argv = swap(ctx.argv, "--port", str(port))
    serve(ctx, argv, lambda log: f"bootstrap: 127.0.0.1:{port}" in log and port_open(port))


def check_topics_create(ctx: Ctx) -> None:
    argv, raw = with_fresh_config(ctx, topics=False)
    done = run(ctx, argv)
    for key in ("input", "predictions", "dead_letters", "telemetry", "control"):
        assert re.search(rf"^created\s+{re.escape(raw['topics'][key])}$", done.stdout, re.M), (
            key,
            done.stdout,
        )


def check_run(ctx: Ctx) -> None:
    argv, _ = with_fresh_config(ctx)
    port = free_port()
    argv = swap(argv, "--metrics-port", str(port))
    serve(ctx, argv, lambda _log: http_ok(f"http://127.0.0.1:{port}/readyz"))


def check_produce(ctx: Ctx) -> None:
    argv, raw = with_fresh_config(ctx)
    run(ctx, swap(argv, "--events", "2000"))
    values = read_records(ctx.bootstrap, raw["topics"]["input"], 2000)
    assert len(values) == 2000, len(values)


def check_produce_labels(ctx: Ctx) -> None:
    argv, raw = with_fresh_config(ctx)
    run(ctx, swap(swap(argv, "--events", "2000"), "--rate", "4000"), timeout=90)
    topic = raw["topics"]["input"] + ".labels"
    labels = [json.loads(v) for v in read_records(ctx.bootstrap, topic, 1500)]
    # 90% of frauds and 85% of the rest get a label, one each
    assert 0.75 * 2000 < len(labels) < 0.95 * 2000, len(labels)
    assert len({lab["event_id"] for lab in labels}) == len(labels)
    assert {lab["label"] for lab in labels} <= {0, 1}


def check_loadtest_labels(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv[:3], "--help"])
    assert "--events" in done.stdout and "--runs" in done.stdout and "canary" in done.stdout


def check_engine_bench_cpu(ctx: Ctx) -> None:
    assert ctx.argv == [".venv/bin/python", "-m", "loadtests.engine_bench"]
    done = run(ctx, [*ctx.argv, "--events", "2000", "--rates", "1000", "--no-broker"], 120)
    assert "2. engine in-process" in done.stdout and "half the drain rate" in done.stdout


def check_engine_bench_gpu(ctx: Ctx) -> None:
    """Exit 0 where there is a GPU; elsewhere the refusal the README promises (the fix named, no
    traceback) after the config and the flags were taken."""
    argv = [*ctx.argv, "--events", "1000", "--rates", "500"]
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=_env(ctx.bootstrap),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode == 0:
        return
    assert "engine benchmark: model fraud/v3 (torch, cuda" in done.stdout, done.stdout
    assert "no CUDA device" in done.stderr and "run on a GPU node" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def check_helm_install(ctx: Ctx) -> None:
    """No helm binary or cluster here: what install would apply, rendered by Helm's own engine."""
    import helm_python as helm

    assert ctx.argv[:3] == ["helm", "install", "fraud"] and ctx.argv[4] == "-f"
    chart = helm.Chart.load(str(ROOT / ctx.argv[3]))
    values = yaml.safe_load((ROOT / ctx.argv[5]).read_text())
    chart.validate_schema(values)
    out = chart.render(values, name=ctx.argv[2], namespace="fraud", is_install=True)
    docs = [
        d for path, text in out.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text)
    ]
    kinds = {doc["kind"] for doc in docs if doc}
    assert "Deployment" in kinds, kinds


def check_loadtest_embedded(ctx: Ctx) -> None:
    out = ctx.tmp / "report-embedded"
    argv = swap(swap(ctx.argv, "--scenario", "drain"), "--events", "1000")
    run(ctx, [*argv, "--no-baselines", "--out", str(out)], timeout=120)
    assert (out / "report.md").is_file() and (out / "results.json").is_file()


def help_lists(*flags: str) -> Callable[[Ctx], None]:
    """``--help`` only, for a benchmark whose parts another test runs for real: the command
    exists and takes the options the README shows (a bounded run of each cost the suite
    15-22 s of its 20 minutes and proved what those tests prove)."""

    def check(ctx: Ctx) -> None:
        argv = ctx.argv[: 3 if ctx.argv[1] == "-m" else 2]
        done = run(ctx, [*argv, "--help"])
        for flag in flags:
            assert flag in done.stdout, (flag, done.stdout)

    return check


def check_pairs(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv, "--events", "1000", "--pairs", "1"], timeout=120)
    assert "over 1 pairs" in done.stdout, done.stdout


def check_state_check(ctx: Ctx) -> None:
    done = run(ctx, swap(ctx.argv, "--events", "20000"), timeout=120)
    assert "OK: 120,000/120,000 features equal" in done.stdout, done.stdout


def check_state_profile(ctx: Ctx) -> None:
    done = run(ctx, swap(ctx.argv, "--events", "4000"), timeout=120)
    for part in ("python: compute", "native: compute", "native: changelog at commit"):
        assert part in done.stdout, done.stdout


def check_state_soak(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv, "--cards", "5000", "--every", "5000"], timeout=120)
    assert "of 5,000 cards; vocabulary" in done.stdout, done.stdout


def check_explain_cost(ctx: Ctx) -> None:
    argv = [*ctx.argv, "--events", "2560", "--rounds", "1", "--methods", "auto,grad-x-input"]
    done = run(ctx, argv, timeout=120)
    assert "us per explained row" in done.stdout and "over 1 rounds" in done.stdout, done.stdout


def check_explain_in_process(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv, "--events", "2000", "--pairs", "1"], timeout=120)
    assert "over 1 pairs" in done.stdout and "CPU per event" in done.stdout, done.stdout


def check_explain_latency(ctx: Ctx) -> None:
    argv = [*ctx.argv, "--rate", "2000", "--seconds", "1", "--pairs", "1"]
    done = run(ctx, argv, timeout=120)
    assert "explained rows" in done.stdout and "over 1 pairs" in done.stdout, done.stdout


def check_otlp_receiver(ctx: Ctx) -> None:
    port = free_port()
    argv = swap(ctx.argv, "--port", str(port))
    serve(ctx, argv, lambda log: f"127.0.0.1:{port}/v1/traces" in log and port_open(port))


def check_efficiency(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv, "--help"])
    for flag in ("--events", "--rate", "--seconds", "--pairs", "--bootstrap"):
        assert flag in done.stdout, done.stdout


def check_efficiency_threads(ctx: Ctx) -> None:
    """--help as the plain command; --threads is an option it has (loadtests.thread_cpu and
    its unit test check what it reports)."""
    check_efficiency_plain(ctx)
    assert "--threads" in run(ctx, [*ctx.argv, "--help"]).stdout


def check_efficiency_model(ctx: Ctx) -> None:
    """--help as the plain command; the model baseline is a choice of --baseline
    (tests/integration/test_baselines.py checks what that baseline does)."""
    check_efficiency_plain(ctx)
    done = run(ctx, [*ctx.argv, "--help"])
    assert "--baseline" in done.stdout and "model" in done.stdout, done.stdout


def check_efficiency_floor(ctx: Ctx) -> None:
    """--help as the plain command, --subject model among its options, and the model
    passthrough refused as the measure of itself (before any broker starts)."""
    check_efficiency_plain(ctx)
    assert "--subject" in run(ctx, [*ctx.argv, "--help"]).stdout
    argv = [*ctx.argv, "--baseline", "model", "--pairs", "1"]
    done = subprocess.run(
        argv, cwd=ROOT, env=_env(ctx.bootstrap), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--subject model needs --baseline passthrough" in done.stderr


def check_paced_calls(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv, "--calls", "20"], timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.endswith("x)")]
    assert len(lines) == 6 and "the model call" in done.stdout, done.stdout


def check_idle_cpu(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv, "--seconds", "1", "--rounds", "1"], timeout=180)
    for side in ("worker", "passthrough"):
        assert f"round 1 {side}: " in done.stdout, done.stdout
        assert f"{side}: median " in done.stdout, done.stdout


def check_efficiency_plain(ctx: Ctx) -> None:
    """--help as the plain command, and the config is what the README says it is: the fraud
    model behind a pipeline with no state stage and no reason codes."""
    check_efficiency(ctx)
    from streaming.config import load_config
    from streaming.pipeline import load_pipeline

    plain = load_config(ROOT / ctx.argv[ctx.argv.index("-c") + 1])
    fraud = load_config(ROOT / "pipelines" / "fraud" / "pipeline.yaml")
    assert load_pipeline(plain.pipeline.module).state is None
    assert plain.reasons is None and plain.decision.graph is None
    assert plain.model == fraud.model and plain.worker == fraud.worker


def check_pod_replacement(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv[:3], "--help"])
    for flag in ("--events", "--rate", "--runs", "--max-wait"):
        assert flag in done.stdout, done.stdout


def check_faulty(ctx: Ctx) -> None:
    """The kinds the README names are the command's choices; ``constant`` is built by the
    command itself (``noisy`` and ``flaky`` are built through the same function by the monitor
    and Prometheus tests, so a run of each here proved nothing more and cost ~15 s)."""
    kinds = ctx.argv[ctx.argv.index("--kind") + 1].split("|")
    assert kinds == ["noisy", "constant", "flaky"], kinds
    done = run(ctx, [ctx.argv[0], "-m", "models.fraud.faulty", "--help"])
    assert all(kind in done.stdout for kind in kinds), done.stdout
    out = ctx.tmp / "constant" / "v9"
    run(ctx, [*swap(swap(ctx.argv, "--kind", "constant"), "--out", str(out))])
    assert (out / "metadata.json").is_file() and (out / "model.onnx").is_file()


def check_train(ctx: Ctx) -> None:
    out = ctx.tmp / "trained"
    run(ctx, [*swap(ctx.argv, "--out", str(out)), "--events", "3000", "--versions", "v1"])
    assert (out / "v1" / "metadata.json").is_file()


def check_python_m_streaming(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv, "--help"])
    assert "run" in done.stdout and "route" in done.stdout, done.stdout


def check_promtool_rules(ctx: Ctx) -> None:
    assert ctx.argv == ["promtool", "check", "rules"]
    done = run(ctx, [*ctx.argv, "helm/streaming-workers/files/alerts.rules.yml"])
    assert "SUCCESS" in done.stdout + done.stderr


def check_as_written(ctx: Ctx) -> None:
    run(ctx, ctx.argv)


def check_registry(ctx: Ctx) -> None:
    port = free_port()
    argv = swap(swap(ctx.argv, "--port", str(port)), "--state", str(ctx.tmp / "registry.json"))
    serve(
        ctx,
        argv,
        lambda log: "schema registry on" in log and http_ok(f"http://127.0.0.1:{port}/subjects"),
    )


def check_demo_avro(ctx: Ctx) -> None:
    argv = swap(swap(ctx.argv, "--events", "1500"), "--live-events", "300")
    done = run(ctx, argv, timeout=240)
    assert "events in avro" in done.stdout, done.stdout
    assert "accounted for     1,500 of 1,500 events" in done.stdout, done.stdout


def check_formats_bench(ctx: Ctx) -> None:
    done = run(ctx, [*ctx.argv, "--decode-events", "300", "--decode-only"], timeout=240)
    assert "confluent AvroDeserializer" in done.stdout and "JSON decoder" in done.stdout


def check_proto_descriptor(ctx: Ctx) -> None:
    proto = ROOT / ctx.argv[-1]
    copy = ctx.tmp / proto.name
    copy.write_text(proto.read_text())
    run(ctx, [*ctx.argv[:-1], str(copy)])
    assert copy.with_suffix(".desc").read_bytes() == proto.with_suffix(".desc").read_bytes()


@dataclass(frozen=True)
class Check:
    how: str
    """What is run instead of (or besides) the README's words, and why."""
    run: Callable[[Ctx], None]


CANARY_ROUTE = (
    ".venv/bin/streaming route -c pipelines/fraud/pipeline-canary.yaml --set v1=90 --set v2=10 "
    "--shadow v3=0.2"
)
MONITOR = (
    ".venv/bin/streaming monitor -c pipelines/fraud/pipeline.yaml [--auto-rollback] "
    "[--windows N] [--duration S]"
)
HELM_INSTALL = (
    "helm install fraud helm/streaming-workers -f helm/streaming-workers/examples/values-cpu.yaml"
)
COPY = "on a copy of the shipped config with its own topics and group"
FRESH = f"{COPY} (topics created first)"

COMMANDS: dict[str, Check] = {
    "make run": Check(
        "`make -n run`: the target exists and runs the demo (minutes)",
        check_make_dry_run("run", "streaming demo"),
    ),
    "make test": Check(
        "`make -n test`: the target exists and runs lint and pytest (the whole suite)",
        check_make_dry_run("test", "pytest -q"),
    ),
    CANARY_ROUTE: Check(
        f"as written {FRESH}; the control topic then holds exactly those weights and shadows",
        check_route,
    ),
    MONITOR: Check(
        f"{FRESH}, placeholders as `--auto-rollback --windows 1 --duration 4`; exit 0",
        check_monitor,
    ),
    ".venv/bin/streaming broker --port 9092": Check(
        "on a free port instead of 9092: ready (bootstrap line, port open), SIGTERM, exit 0",
        check_broker,
    ),
    ".venv/bin/streaming topics create -c pipelines/fraud/pipeline.yaml": Check(
        f"as written {COPY}: every topic reported created",
        check_topics_create,
    ),
    ".venv/bin/streaming run -c pipelines/fraud/pipeline.yaml --metrics-port 9400": Check(
        f"{FRESH}, a free metrics port instead of 9400: /readyz 200, SIGTERM, exit 0",
        check_run,
    ),
    (
        ".venv/bin/streaming produce -c pipelines/fraud/pipeline.yaml --events 100000 "
        "--rate 5000 --invalid-ratio 0.01"
    ): Check(
        f"{FRESH}, --events 2000 (100,000 at 5,000/s take 20 s): all 2,000 on the input topic",
        check_produce,
    ),
    (
        ".venv/bin/streaming produce -c pipelines/fraud/pipeline.yaml --events 20000 --rate 2000 "
        "--labels --label-time-scale 1000000"
    ): Check(
        f"{FRESH}, --events 2000 --rate 4000: 75-95% of the events labelled on the labels topic",
        check_produce_labels,
    ),
    ".venv/bin/python -m loadtests.labels --events 100000 --runs 3": Check(
        "--help only (two scenarios x 3 runs take ~15 min); both run small in "
        "tests/integration/test_labels.py, which imports this module's scenarios",
        check_loadtest_labels,
    ),
    ".venv/bin/python -m loadtests.engine_bench": Check(
        "bounded: --events 2000 --rates 1000 --no-broker (~3 min in full; the broker section's "
        "drains are what drain_ratio checks)",
        check_engine_bench_cpu,
    ),
    ".venv/bin/python -m loadtests.engine_bench -c pipelines/fraud/pipeline-gpu.yaml --no-broker": (
        Check(
            "bounded (--events 1000 --rates 500): exit 0 on a GPU; without one, the refusal "
            "naming the fix (cuda asked, none here), after config and flags were taken",
            check_engine_bench_gpu,
        )
    ),
    HELM_INSTALL: (
        Check(
            "no helm binary or cluster here: the chart rendered with those values by Helm's own "
            "engine (helm-python-sdk), schema checked as install does",
            check_helm_install,
        )
    ),
    (
        ".venv/bin/streaming loadtest -c pipelines/fraud/pipeline.yaml --embedded --scenario all "
        "--events 100000 --rates 1000,2000,4000 --seconds 20 --peak-rate 20000"
    ): Check(
        "bounded: --scenario drain --events 1000 --no-baselines (all scenarios take ~15 min; a "
        "short run of each is tests/integration/test_loadtest.py): report written",
        check_loadtest_embedded,
    ),
    ".venv/bin/streaming loadtest -c my-pipeline.yaml --bootstrap kafka:9092 --scenario step": (
        Check(
            "--help only: the step scenario against a cluster given by --bootstrap runs in "
            "tests/integration/test_loadtest.py (--scenario all on the session broker)",
            help_lists("--bootstrap", "--scenario", "--step-rates"),
        )
    ),
    "make help": Check("as written: lists the targets the README names", check_make_help),
    "make models": Check(
        "`make -n models`: a real run retrains (minutes) over the built models",
        check_make_dry_run("models", "models.fraud.train"),
    ),
    "make test-unit": Check(
        "`make -n test-unit`: runs the unit suite", check_make_dry_run("test-unit", "tests/unit")
    ),
    "make lint": Check(
        "`make -n lint`: a real run may pip install first (venv stamp older than pyproject)",
        check_make_dry_run("lint", "ruff format --check"),
    ),
    "make format": Check(
        "`make -n format`: a real run rewrites files", check_make_dry_run("format", "ruff format .")
    ),
    ".venv/bin/python -m loadtests.hostile -c CONFIG": Check(
        "--help only: tests/integration/test_hostile.py sends the same corpus with this "
        "module's build/send/collect to a worker on the real broker and checks every fate",
        help_lists("--config", "--bootstrap", "--timeout"),
    ),
    ".venv/bin/python -m loadtests.exactly_once": Check(
        "--help only: exactly-once runs are tests/integration/test_exactly_once.py's, the "
        "pairing drain_ratio's bounded run",
        help_lists("--events", "--pairs", "--commit-interval-ms"),
    ),
    ".venv/bin/python -m loadtests.pod_replacement --events 6000 --rate 2000 --max-wait 30": (
        Check(
            "--help only (the new-id case waits out --max-wait: ~2 min); its same-id case runs "
            "in tests/integration/test_exactly_once.py, which imports this module's run",
            check_pod_replacement,
        )
    ),
    ".venv/bin/python -m loadtests.drain_ratio": Check(
        "bounded: --events 1000 --pairs 1", check_pairs
    ),
    ".venv/bin/python -m loadtests.decision_cost": Check(
        "bounded: --events 1000 --pairs 1", check_pairs
    ),
    ".venv/bin/streaming run -c pipelines/fraud/pipeline-graph.yaml --metrics-port 9401": Check(
        f"{FRESH}, a free metrics port instead of 9401: /readyz 200, SIGTERM, exit 0",
        check_run,
    ),
    ".venv/bin/python -m loadtests.pool_bench --events 500000 --processes 2 --pairs 5": Check(
        "--help only: the pool's drains run in tests/integration/test_pool.py, the pairing in "
        "drain_ratio's bounded run",
        help_lists("--events", "--processes", "--pairs"),
    ),
    ".venv/bin/python -m loadtests.trace_cost": Check(
        "--help only: traced runs are tests/integration/test_tracing.py's, the pairing "
        "drain_ratio's bounded run",
        help_lists("--events", "--pairs"),
    ),
    ".venv/bin/python -m loadtests.trace_cost --pairs 20": Check(
        "--help only: the same command with more pairs (~6 min)",
        help_lists("--events", "--pairs", "--new-trace-header"),
    ),
    ".venv/bin/python -m loadtests.trace_cost --new-trace-header": Check(
        "--help only: the same command with the opt-in header on every prediction",
        help_lists("--events", "--pairs", "--new-trace-header"),
    ),
    ".venv/bin/python -m loadtests.header_cost": Check(
        "--help only: a producer and the embedded broker, ~1 min; what a header per record "
        "costs is a benchmark's figure, not a test's",
        help_lists("--records", "--rounds"),
    ),
    ".venv/bin/python -m loadtests.state_cost --events 100000 --pairs 30": Check(
        "--help only: drains with the state stage are tests/integration/test_state.py's, the "
        "pairing drain_ratio's bounded run",
        help_lists("--events", "--pairs"),
    ),
    ".venv/bin/python -m loadtests.state_profile --events 200000": Check(
        "bounded: --events 4000 (in process, no broker; ~1 min in full): both paths' parts",
        check_state_profile,
    ),
    ".venv/bin/python -m loadtests.state_check --events 1000000": Check(
        "bounded: --events 20000 (the full run takes ~2 min): every feature equal",
        check_state_check,
    ),
    ".venv/bin/python -m loadtests.state_soak --merchants 20000000": Check(
        "bounded: --cards 5000 (~1 min in full): the summary line",
        check_state_soak,
    ),
    ".venv/bin/python -m loadtests.state_soak --merchants 20000000 --no-prune": Check(
        "bounded: --cards 5000 (~1 min in full): the summary line",
        check_state_soak,
    ),
    ".venv/bin/python -m loadtests.state_soak": Check(
        "bounded: --cards 5000 (the full million takes ~1.5 min): the summary line",
        check_state_soak,
    ),
    ".venv/bin/python -m loadtests.explain_drain": Check(
        "--help only: explained runs are the demo's (tests/integration/test_cli.py), "
        "the pairing drain_ratio's bounded run",
        help_lists("--events", "--pairs"),
    ),
    ".venv/bin/python -m loadtests.explain_drain --pairs 16": Check(
        "--help only: the same command with more pairs (~5 min)",
        help_lists("--events", "--pairs"),
    ),
    ".venv/bin/python -m loadtests.decision_cost --pairs 10": Check(
        "--help only: the same command with more pairs; its bounded run is the entry above",
        help_lists("--events", "--pairs"),
    ),
    ".venv/bin/python -m loadtests.explain_cost": Check(
        "bounded: --events 2560 --rounds 1 --methods auto,grad-x-input (the grid method alone "
        "takes ~1 s a round): both methods' costs reported",
        check_explain_cost,
    ),
    ".venv/bin/python -m loadtests.explain_drain --in-process --gil-switch-ms 5": Check(
        "bounded: --events 2000 --pairs 1 (in-process, no broker): both ratios reported",
        check_explain_in_process,
    ),
    ".venv/bin/python -m loadtests.explain_latency": Check(
        "bounded: --rate 2000 --seconds 1 --pairs 1 (in-process, no broker): the latencies of "
        "both kinds reported",
        check_explain_latency,
    ),
    ".venv/bin/python -m streaming.dev.otlp_receiver --port 4318": Check(
        "on a free port instead of 4318: ready (its address printed, port open), SIGTERM, exit 0",
        check_otlp_receiver,
    ),
    ".venv/bin/python -m loadtests.efficiency": Check(
        "--help only: its options (one bounded pair took 35 s of the suite's 20 min, four "
        "process starts; the worker-against-passthrough drain it pairs is what drain_ratio's "
        "bounded run checks; the full 5 pairs take ~8 min)",
        check_efficiency,
    ),
    ".venv/bin/python -m loadtests.efficiency -c loadtests/plain_pipeline.yaml": Check(
        "--help only, as the command above; the config loads as the plain pipeline it says",
        check_efficiency_plain,
    ),
    ".venv/bin/python -m loadtests.efficiency -c loadtests/plain_pipeline.yaml --threads": Check(
        "--help only, as the plain command above, and --threads among its options",
        check_efficiency_threads,
    ),
    (
        ".venv/bin/python -m loadtests.efficiency -c loadtests/plain_pipeline.yaml --threads "
        "--baseline model"
    ): Check(
        "--help only, as the plain command above, and --baseline model among its options",
        check_efficiency_model,
    ),
    (
        ".venv/bin/python -m loadtests.efficiency -c loadtests/plain_pipeline.yaml --threads "
        "--subject model"
    ): Check(
        "--help only, as the plain command above, with --subject among its options; "
        "--baseline model with it fails at once with the fix",
        check_efficiency_floor,
    ),
    ".venv/bin/python -m loadtests.idle_cpu": Check(
        "bounded: --seconds 1 --rounds 1: both sides measured and their medians printed",
        check_idle_cpu,
    ),
    ".venv/bin/python -m loadtests.paced_calls": Check(
        "bounded: --calls 20: every step's three figures printed",
        check_paced_calls,
    ),
    ".venv/bin/python -m models.fraud.faulty --kind noisy|constant|flaky --out models/fraud/v9": (
        Check(
            "the kinds in --help; constant built, in a scratch folder (not models/fraud/v9)",
            check_faulty,
        )
    ),
    ".venv/bin/python -m models.fraud.train --out models/fraud": Check(
        "bounded: --events 3000 --versions v1, into a scratch folder (the real run retrains "
        "every version over the built ones)",
        check_train,
    ),
    ".venv/bin/python -m streaming": Check(
        "with --help: the module runs", check_python_m_streaming
    ),
    "promtool check rules": Check(
        "with the rules file the sentence names (helm/streaming-workers/files/alerts.rules.yml)",
        check_promtool_rules,
    ),
    "promtool test rules tests/promtool/alerts_test.yml": Check("as written", check_as_written),
    (
        ".venv/bin/python -m streaming.formats.proto_descriptor pipelines/fraud/transaction.proto"
    ): Check(
        "on a copy of the .proto in a scratch folder (as written it rewrites the shipped "
        ".desc): the descriptor it writes is the one shipped",
        check_proto_descriptor,
    ),
    ".venv/bin/streaming registry --port 8081 --state .registry.json": Check(
        "on a free port and a scratch state file: ready (/subjects answers), SIGTERM, exit 0",
        check_registry,
    ),
    ".venv/bin/streaming demo --format avro --events 20000 --live-events 2000": Check(
        "bounded: --events 1500 --live-events 300: every event accounted for, in Avro",
        check_demo_avro,
    ),
    ".venv/bin/python -m loadtests.formats --events 100000 --pairs 6": Check(
        "bounded: --decode-events 300 --decode-only (the drain pairs take minutes; the worker's "
        "Avro drain is tests/integration/test_formats.py): the decode comparison reported",
        check_formats_bench,
    ),
    ".venv/bin/python -m loadtests.formats --events 100000 --pairs 12": Check(
        "--help only: the same command with more pairs (~3 min); its bounded run is the entry "
        "above",
        help_lists("--events", "--pairs"),
    ),
}


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def models_complete(models_built: Path) -> Path:
    """The canary and GPU configs load v3 too (make models builds it with v1 and v2)."""
    if not (models_built / "v3" / "metadata.json").is_file():
        pytest.fail(f"{models_built / 'v3'} is not built: run make models")
    return models_built


def test_the_readme_commands_are_found() -> None:
    """Extraction itself can break (a fence spelled ```bash, a changed table): then nothing
    would be checked and everything would pass."""
    commands = readme_commands()
    assert "make run" in commands and CANARY_ROUTE in commands and MONITOR in commands
    assert len(fenced_commands(README.read_text())) >= 13
    assert len(synopsis_rows(README.read_text())) >= 8


def test_every_table_entry_is_still_in_the_readme() -> None:
    """A stale entry means the README's command changed and its new spelling is unchecked."""
    stale = sorted(set(COMMANDS) - set(readme_commands()))
    assert not stale, f"COMMANDS entries no longer in README.md: {stale}"


@pytest.mark.parametrize("command", readme_commands(), ids=readme_commands())
def test_readme_command_runs(
    command: str, broker: Any, models_complete: Path, tmp_path: Path
) -> None:
    check = COMMANDS.get(command)
    assert check is not None, (
        f"README.md shows {command!r}, which {Path(__file__).name} does not check: add it to "
        "COMMANDS with how it is checked (as written, or bounded, and why)"
    )
    check.run(Ctx(shlex.split(command), broker.bootstrap, tmp_path))


def _help(argv: list[str]) -> str:
    done = subprocess.run(
        [".venv/bin/streaming", *argv, "--help"],
        cwd=ROOT,
        env=_env("127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "synopsis", synopsis_rows(README.read_text()), ids=synopsis_rows(README.read_text())
)
def test_cli_table_row_matches_help(synopsis: str) -> None:
    """The CLI table's synopsis: the command exists and takes every option the row shows."""
    words = synopsis.split()[1:]
    end = next((i for i, w in enumerate(words) if not w.isalpha()), len(words))
    command = words[:end]
    text = _help(command)
    for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", synopsis):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (option, text)


def test_cli_table_lists_every_command() -> None:
    """A new subcommand without a row in the CLI table would be undocumented."""
    listed = {row.split()[1] for row in synopsis_rows(README.read_text())}
    usage = _help([]).split("positional arguments:")[1].split("options:")[0]
    commands = set(re.findall(r"^    (\w+)\s", usage, flags=re.M))
    assert commands and commands <= listed, sorted(commands - listed)
