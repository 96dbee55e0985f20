"""What every test may use: ``measured``, a line of figures a test reports (kill-to-replace
seconds, duplicates, rates) printed together at the end of the run, whichever process ran it
(pytest-xdist runs tests in worker processes whose own output is not shown)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_KEY = "measured"


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``measured(text)`` keeps ``text`` for the run's "measured" summary."""

    def report(text: str) -> None:
        request.node.user_properties.append((_KEY, text.strip("\n")))

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        (report.nodeid, value)
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
        for key, value in getattr(report, "user_properties", ())
        if key == _KEY
    ]
    if lines:
        terminalreporter.section("measured")
        for nodeid, text in sorted(lines):
            terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {text}")
