"""One real embedded broker per test session on a free port; its log is shown when a test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming.dev.broker import EmbeddedBroker
from tests.kafka_helpers import ROOT

_BROKER_LOG: list[Path] = []


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    _BROKER_LOG.append(log)
    b = EmbeddedBroker(log_path=log).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def models_built() -> Path:
    models = ROOT / "models" / "fraud"
    for version in ("v1", "v2"):
        if not (models / version / "metadata.json").is_file():
            pytest.fail(f"{models / version} is not built: run make models")
    return models


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed and _BROKER_LOG and _BROKER_LOG[0].exists():
        tail = _BROKER_LOG[0].read_text(errors="replace").splitlines()[-40:]
        report.sections.append(("embedded broker log (last 40 lines)", "\n".join(tail)))
    return report
