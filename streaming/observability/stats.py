"""A worker's running counts: for its progress line, its summary and the benchmarks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from streaming.observability.latency import LatencyRecorder


@dataclass
class WorkerStats:
    """Counts for the progress line and the summary; written by one thread at a time."""

    consumed: int = 0
    predictions: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    delivery_errors: int = 0
    batches: int = 0
    batch_rows: int = 0
    inference_s: float = 0.0
    """Model time summed over batches: rows / inference_s is the inference stage's rate."""
    transactions: int = 0
    """Exactly-once: transactions committed."""
    transaction_s: float = 0.0
    """Exactly-once: time spent in commit_transaction (the drain before it not included)."""
    first_consumed: float | None = None
    last_output: float | None = None
    end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)
    steady_from_ms: int | None = None
    """Also record events with event time at or after this into ``steady_end_to_end_ms``
    (benchmarks leave out a phase's start transient this way)."""
    steady_end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)

    @property
    def outputs(self) -> int:
        return self.predictions + sum(self.dead_letters.values())

    def rate(self) -> float:
        """Events/s from the first consumed event to the last acknowledged output."""
        if self.first_consumed is None or self.last_output is None:
            return 0.0
        span = self.last_output - self.first_consumed
        return self.outputs / span if span > 0 else 0.0
