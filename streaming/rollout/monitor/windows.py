"""Tumbling windows per model version: what the monitor counts before it judges.

Pure bookkeeping (no Kafka, no clock of its own), so that the tests can feed it records and
times directly. Windows are keyed by event time: a prediction's scoring time, a telemetry
record's time, a dead letter's broker timestamp.

A window closes once the clock has passed its end plus the grace period and, while the reader
is still reading, once the predictions read have passed it too. A monitor that reads slower
than the workers score (measured: 1,450 predictions/s read against 1,600/s scored with a core
kept busy, 4 s behind after 10 s) would otherwise close each window before most of its
predictions arrived and judge it on a few dozen; now it judges late but whole.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streaming.observability.drift import DriftBaseline
from streaming.observability.latency import LatencyRecorder

READER_IDLE_MS = 3_000
"""A reader with nothing new for this long has caught up: a fetch from a quiet topic returns
empty after at most 1.5 s (faust's fetch wait), and a reader that is behind reads every ~0.3 s."""


@dataclass
class VersionWindow:
    """One version's counts in one window."""

    predictions: int = 0
    flagged: int = 0
    shadow_predictions: int = 0
    latency_ms: LatencyRecorder = field(default_factory=LatencyRecorder)
    score_counts: np.ndarray | None = None
    feature_counts: dict[str, np.ndarray] = field(default_factory=dict)
    telemetry_errors: int = 0
    inference_dead_letters: int = 0
    batches: int = 0
    inference_ms_total: float = 0.0
    decisions: Counter[str] = field(default_factory=Counter)
    """Primary predictions by ``decision`` (approve, review, decline); predictions of a worker
    older than decisions carry none and are not counted here."""

    @property
    def decision_shares(self) -> dict[str, float]:
        """Each decision's share of the window's decided predictions (empty: none had one)."""
        total = sum(self.decisions.values())
        return {d: round(n / total, 5) for d, n in sorted(self.decisions.items())} if total else {}

    @property
    def errors(self) -> int:
        # Failed batches show in telemetry and as dead letters (shadows: telemetry only).
        return max(self.telemetry_errors, self.inference_dead_letters)

    @property
    def scored(self) -> int:
        return self.predictions + self.shadow_predictions

    @property
    def error_rate(self) -> float:
        total = self.scored + self.errors
        return self.errors / total if total else 0.0

    @property
    def flagged_share(self) -> float:
        return self.flagged / self.scored if self.scored else 0.0


@dataclass
class Window:
    start_ms: int
    end_ms: int
    versions: dict[str, VersionWindow] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Dead letters of the whole pipeline by stage (decode and validate precede routing)."""

    def version(self, name: str) -> VersionWindow:
        got = self.versions.get(name)
        if got is None:
            got = self.versions[name] = VersionWindow()
        return got

    @property
    def events(self) -> int:
        return sum(v.predictions for v in self.versions.values()) + sum(self.dead_letters.values())


class WindowStore:
    """Open windows, filled from records, handed out once their grace period has passed."""

    def __init__(
        self,
        window_ms: int,
        grace_ms: int,
        threshold: float,
        baselines: dict[str, DriftBaseline | None],
    ) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.threshold = threshold
        self.baselines = baselines
        self._open: dict[int, Window] = {}
        self._closed_before = 0
        self.late = 0
        """Records that arrived after their window was judged (counted nowhere else)."""
        self.read_through_ms = 0
        """The latest scoring time among the predictions read: how far the reader has got."""
        self._read_at_ms: int | None = None
        self.idle_ms = max(grace_ms, READER_IDLE_MS)

    def _window(self, ts_ms: int, records: int = 1) -> Window | None:
        start = ts_ms - ts_ms % self.window_ms
        if start < self._closed_before:
            self.late += records
            return None
        w = self._open.get(start)
        if w is None:
            w = self._open[start] = Window(start, start + self.window_ms)
        return w

    def add_predictions(
        self, records: list[dict[str, Any]], shadow: bool = False, read_at_ms: int | None = None
    ) -> None:
        """Predictions (or shadow predictions) as decoded JSON dicts.

        ``read_at_ms``: when the reader got them (primary predictions only). Given, windows
        wait for the reader (close); not given (tests of the judging), the clock alone decides.
        """
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for r in records:
            scored = int(r["scored_ms"])
            start = scored - scored % self.window_ms
            groups.setdefault((start, str(r["version"])), []).append(r)
            if not shadow and scored > self.read_through_ms:
                self.read_through_ms = scored
        if read_at_ms is not None and records and not shadow:
            self._read_at_ms = read_at_ms
        for (start, version), rows in groups.items():
            w = self._window(start, len(rows))
            if w is None:
                continue
            vw = w.version(version)
            scores = np.fromiter((float(r["score"]) for r in rows), np.float64, len(rows))
            if shadow:
                vw.shadow_predictions += len(rows)
            else:
                vw.predictions += len(rows)
                vw.decisions.update(r["decision"] for r in rows if "decision" in r)
            vw.flagged += int(np.count_nonzero(scores >= self.threshold))
            latency = np.fromiter(
                (int(r["scored_ms"]) - int(r["ts_ms"]) for r in rows), np.float64, len(rows)
            )
            vw.latency_ms.record_many(np.maximum(latency, 0.0))
            base = self.baselines.get(version)
            if base is not None and base.score is not None:
                counts = base.score.bin_counts(scores)
                vw.score_counts = counts if vw.score_counts is None else vw.score_counts + counts

    def add_telemetry(self, record: dict[str, Any]) -> None:
        w = self._window(int(record["ts_ms"]))
        if w is None:
            return
        vw = w.version(str(record["version"]))
        vw.telemetry_errors += int(record.get("errors", 0))
        vw.batches += int(record.get("batches", 0))
        vw.inference_ms_total += float(record.get("inference_ms_mean", 0.0)) * int(
            record.get("batches", 0)
        )
        for name, counts in (record.get("feature_counts") or {}).items():
            arr = np.asarray(counts, dtype=np.int64)
            have = vw.feature_counts.get(name)
            vw.feature_counts[name] = arr if have is None or have.shape != arr.shape else have + arr

    def add_dead_letter(self, ts_ms: int, stage: str, version: str | None) -> None:
        w = self._window(ts_ms)
        if w is None:
            return
        w.dead_letters[stage] += 1
        if version is not None:
            w.version(version).inference_dead_letters += 1

    def close(self, now_ms: int) -> list[Window]:
        """Windows whose end plus grace has passed, oldest first (removed from the store).

        Passed for the clock, and for the reader unless it has read nothing for ``idle_ms``
        (caught up with a quiet stream, or nothing left to read).
        """
        until = now_ms
        if self._read_at_ms is not None and now_ms - self._read_at_ms < self.idle_ms:
            until = min(now_ms, self.read_through_ms)
        due = sorted(s for s, w in self._open.items() if w.end_ms + self.grace_ms <= until)
        out = [self._open.pop(s) for s in due]
        if out:
            self._closed_before = max(self._closed_before, out[-1].end_ms)
        return out

    def close_all(self) -> list[Window]:
        """Every open window (at shutdown: judged on what arrived)."""
        return self.close(2**62)
