"""Drift baselines: histograms saved with a model at training time, and PSI against them.

A model's ``metadata.json`` may carry ``drift_baseline``::

    {"features": {"amount": {"edges": [...11], "counts": [...10]}, ...},
     "score": {"edges": [...], "counts": [...]}}

Workers count live inputs into the same bins (telemetry carries the counts), the monitor
counts live scores, and the population stability index says how far apart they are: below
0.1 little change, 0.1-0.25 some, above 0.25 a shift worth acting on (the usual reading).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PSI_FLOOR = 1e-4
"""Empty bins are floored to this share so that PSI stays finite."""


@dataclass(frozen=True)
class Histogram:
    edges: np.ndarray
    counts: np.ndarray

    @classmethod
    def parse(cls, raw: Mapping[str, Any], what: str) -> Histogram:
        edges = np.asarray(raw["edges"], dtype=np.float64)
        counts = np.asarray(raw["counts"], dtype=np.float64)
        if edges.ndim != 1 or counts.shape != (edges.size - 1,) or edges.size < 2:
            raise ValueError(f"{what}: need n+1 edges for n counts")
        if np.any(np.diff(edges) < 0) or counts.sum() <= 0:
            raise ValueError(f"{what}: edges must rise and counts must not all be 0")
        return cls(edges, counts)

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Counts of ``values`` in these bins; values outside go to the first/last bin."""
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        idx = np.searchsorted(self.edges, values, side="right") - 1
        np.clip(idx, 0, self.counts.size - 1, out=idx)
        return np.bincount(idx, minlength=self.counts.size)


@dataclass(frozen=True)
class DriftBaseline:
    features: dict[str, Histogram]
    score: Histogram | None

    @classmethod
    def from_metadata(cls, raw: Mapping[str, Any] | None) -> DriftBaseline | None:
        """The baseline in a model's metadata, or None when it has none (old artifacts)."""
        if not raw:
            return None
        features = {
            name: Histogram.parse(h, f"drift_baseline.features.{name}")
            for name, h in (raw.get("features") or {}).items()
        }
        score = Histogram.parse(raw["score"], "drift_baseline.score") if "score" in raw else None
        return cls(features, score)


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index of ``actual`` counts against ``expected`` counts."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    if a.sum() <= 0 or e.sum() <= 0:
        return 0.0
    p = np.maximum(e / e.sum(), PSI_FLOOR)
    q = np.maximum(a / a.sum(), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


class FeatureSketch:
    """Live input counts in a baseline's bins, filled by the poll thread, taken by telemetry.

    Only the first ``sample`` rows of each chunk are counted: the histograms need a fair
    sample, not every event, and reading fields off records costs on the hot path. The values
    are binned in bulk (at ``take``, or every ``flush_at`` values): binning each chunk on its own
    cost numpy's fixed price per call, about 20 calls a chunk, which at low rates (chunks of a
    few rows) was a larger share of the poll thread's time than decoding.
    """

    def __init__(self, baseline: DriftBaseline, sample: int = 64, flush_at: int = 8192) -> None:
        self._hists = baseline.features
        self._sample = sample
        self._flush_at = flush_at
        self._absent_by_type: dict[type, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._counts = self._zero()
        self._pending: dict[str, list[float]] = {name: [] for name in self._hists}
        self._pending_rows = 0

    def _zero(self) -> dict[str, np.ndarray]:
        return {name: np.zeros(h.counts.size, np.int64) for name, h in self._hists.items()}

    def add(self, records: Sequence[Any], columns: Mapping[str, np.ndarray] | None = None) -> None:
        """Count the chunk's first rows; ``columns``: features that are not fields of the
        records (the state stage's), by name, one value per record."""
        rows = records[: self._sample]
        if not rows or not self._hists:
            return
        n = len(rows)
        absent = self._absent(type(rows[0]))
        values = {
            name: (
                columns[name][:n].tolist()
                if columns is not None and name in columns
                else [_NAN] * n
                if name in absent
                else [_number(getattr(r, name, None)) for r in rows]
            )
            for name in self._hists
        }
        with self._lock:
            pending = self._pending
            for name, vals in values.items():
                pending[name] += vals
            self._pending_rows += len(rows)
            if self._pending_rows >= self._flush_at:
                self._flush()

    def _absent(self, record_type: type) -> frozenset[str]:
        """The baseline's names that a pydantic record type has no field or attribute for
        (counted as NaN, as ``getattr(r, name, None)`` would make them, without the
        AttributeError pydantic raises and getattr catches for every row: at low rates that
        was a third of the sketch's cost). Any other record type is asked row by row."""
        absent = self._absent_by_type.get(record_type)
        if absent is None:
            fields = getattr(record_type, "model_fields", None)
            absent = frozenset(
                ()
                if not isinstance(fields, dict)
                else (n for n in self._hists if n not in fields and not hasattr(record_type, n))
            )
            self._absent_by_type[record_type] = absent
        return absent

    def _flush(self) -> None:
        """Bin what is pending (under the lock)."""
        for name, hist in self._hists.items():
            vals = self._pending[name]
            if vals:
                self._counts[name] += hist.bin_counts(np.asarray(vals, dtype=np.float64))
                self._pending[name] = []
        self._pending_rows = 0

    def take(self) -> dict[str, list[int]]:
        """The counts since the last take (and start again from zero)."""
        with self._lock:
            self._flush()
            counts, self._counts = self._counts, self._zero()
        return {name: c.tolist() for name, c in counts.items() if c.any()}


_NAN = float("nan")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
