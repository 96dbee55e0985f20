"""Worker threads carry their names into the OS, where top -H, ps -L and /proc show them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from streaming.observability.threads import OS_NAME_BYTES, named_thread


def _os_name(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def _name_seen_from_inside(name: str) -> tuple[str, list[int]]:
    seen: dict[str, object] = {}
    got: list[int] = []

    def work(a: int, b: int) -> None:
        seen["name"] = _os_name(threading.get_native_id())
        got.extend((a, b))

    t = named_thread(work, name, args=(1, 2))
    t.start()
    t.join(10)
    assert not t.is_alive()
    return str(seen["name"]), got


def test_a_named_thread_has_its_name_in_the_os_and_runs_its_target_with_its_args() -> None:
    name, got = _name_seen_from_inside("delivery")
    assert name == "delivery"
    assert got == [1, 2]


def test_a_long_name_keeps_what_the_os_keeps() -> None:
    name, _ = _name_seen_from_inside("infer-canary-version-7")
    assert name == "infer-canary-version-7"[:OS_NAME_BYTES]


def test_the_thread_is_what_threading_knows_and_the_process_keeps_its_name() -> None:
    before = Path("/proc/self/comm").read_text()
    t = named_thread(lambda: None, "watchdog", daemon=False)
    assert t.name == "watchdog" and not t.daemon
    t.start()
    t.join(10)
    assert Path("/proc/self/comm").read_text() == before
    assert _os_name(os.getpid()) == before.strip()


def test_a_started_engine_s_threads_are_named_in_the_os() -> None:
    """What ``top -H -p <worker pid>`` shows: an inference thread per version and the
    watchdog, by name (the Kafka sink's delivery thread is named the same way)."""
    from streaming.config import load_config
    from streaming.dev.inprocess import InstantSink
    from streaming.engine.engine import Engine

    root = Path(__file__).resolve().parents[2]
    assert (root / "models" / "fraud" / "v1" / "metadata.json").exists(), "run `make models`"
    cfg = load_config(root / "pipelines" / "fraud" / "pipeline-canary.yaml")
    engine = Engine(cfg, InstantSink())
    engine.start()
    try:
        names = {(task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()}
    finally:
        engine.close()
    expected = {f"infer-{v.version}"[:OS_NAME_BYTES] for v in cfg.model.versions}
    assert len(expected) >= 2
    assert expected | {"watchdog"} <= names
