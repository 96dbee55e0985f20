"""A worker's running counts: for its progress line, its summary and the benchmarks.

Each field has one writer, named beside it; readers (progress line, summary, tests) read
without locks, which is safe for ints and floats in CPython and at worst a turn stale.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from streaming.observability.latency import LatencyRecorder


@dataclass(slots=True)
class ScoringTotals:
    """One version's model work since start; written only by that version's inference thread."""

    batches: int = 0
    rows: int = 0
    inference_s: float = 0.0
    decisions: list[int] = field(default_factory=lambda: [0, 0, 0])
    """Published predictions by decision code (approve, review, decline)."""
    reasons: Counter[str] = field(default_factory=Counter)
    """Published predictions by reason code (each of a prediction's reasons counts once)."""


@dataclass
class WorkerStats:
    """Counts for the progress line and the summary, each written by one thread."""

    # the feeding thread (Engine.submit)
    consumed: int = 0
    first_consumed: float | None = None
    # the delivery thread (every sink runs its delivery callbacks one at a time)
    predictions: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    delivery_errors: int = 0
    last_output: float | None = None
    end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)
    steady_end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)
    steady_from_ms: int | None = None
    """Set by a benchmark before it feeds: events with event time at or after this are also
    recorded into ``steady_end_to_end_ms`` (leaving out a phase's start transient)."""
    # the committer (main thread), exactly-once only
    transactions: int = 0
    transaction_s: float = 0.0
    """Time spent in commit_transaction (the drain before it not included)."""
    scoring: list[ScoringTotals] = field(default_factory=list)
    """One per model version, each written by its own inference thread."""

    @property
    def batches(self) -> int:
        return sum(s.batches for s in self.scoring)

    @property
    def batch_rows(self) -> int:
        return sum(s.rows for s in self.scoring)

    @property
    def inference_s(self) -> float:
        """Model time summed over batches: rows / inference_s is the inference stage's rate."""
        return sum(s.inference_s for s in self.scoring)

    def decisions(self) -> dict[str, int]:
        """Published predictions by decision, over the versions."""
        names = ("approve", "review", "decline")
        return {n: sum(s.decisions[i] for s in self.scoring) for i, n in enumerate(names)}

    def reasons(self) -> Counter[str]:
        """Published predictions by reason code, over the versions."""
        out: Counter[str] = Counter()
        for s in self.scoring:
            out.update(s.reasons)
        return out

    @property
    def outputs(self) -> int:
        return self.predictions + sum(self.dead_letters.values())

    def rate(self) -> float:
        """Events/s from the first consumed event to the last acknowledged output."""
        if self.first_consumed is None or self.last_output is None:
            return 0.0
        span = self.last_output - self.first_consumed
        return self.outputs / span if span > 0 else 0.0
