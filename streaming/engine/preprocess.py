"""Records -> a float32 feature matrix through the pipeline's vectorised code, and the rows it
refused with why. Pure: the caller decides what a refused row becomes (a dead letter on the
primary path, nothing on a shadow's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streaming.engine.types import STAGE_PREPROCESS, Rejection
from streaming.pipeline import Preprocessor

_MAX_REASON = 480


@dataclass(frozen=True, slots=True)
class Features:
    """The rows that made finite features, and the others with their rejection."""

    rows: list[int]
    """Indexes (into the records given) of the rows in ``matrix``, in order."""
    matrix: np.ndarray
    rejected: list[tuple[int, Rejection]]

    @property
    def complete(self) -> bool:
        return not self.rejected


def preprocess(
    pre: Preprocessor, records: Sequence[Any], state: np.ndarray | None = None
) -> Features:
    """Vectorised over the batch; a failing batch is retried row by row to find the culprit.
    ``state``: the state stage's columns for these records (None without a state stage)."""
    try:
        matrix = pre.transform(records) if state is None else pre.transform(records, state)
    except Exception:  # noqa: BLE001 - isolate the rows that break the pipeline's code
        return _row_by_row(pre, records, state)
    is_finite = np.isfinite(matrix)
    if is_finite.all():  # the common case in one reduction, not a row mask first
        return Features(list(range(len(records))), matrix, [])
    finite = is_finite.all(axis=1)
    bad = [(int(i), _non_finite(pre, matrix[i])) for i in np.flatnonzero(~finite)]
    ok = np.flatnonzero(finite)
    return Features(ok.tolist(), np.ascontiguousarray(matrix[ok]), bad)


def _row_by_row(pre: Preprocessor, records: Sequence[Any], state: np.ndarray | None) -> Features:
    rows: list[np.ndarray] = []
    keep: list[int] = []
    rejected: list[tuple[int, Rejection]] = []
    for i, rec in enumerate(records):
        try:
            one = pre.transform([rec]) if state is None else pre.transform([rec], state[i : i + 1])
            rows.append(one[0])
            keep.append(i)
        except Exception as exc:  # noqa: BLE001
            reason = f"{type(exc).__name__}: {exc}"[:_MAX_REASON]
            rejected.append((i, Rejection(STAGE_PREPROCESS, reason, type(exc).__name__)))
    if not rows:
        return Features([], np.empty((0, len(pre.feature_names)), np.float32), rejected)
    sub = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
    finite = np.isfinite(sub).all(axis=1)
    rejected += [(keep[j], _non_finite(pre, sub[j])) for j in np.flatnonzero(~finite)]
    rejected.sort(key=lambda r: r[0])
    return Features([keep[j] for j in np.flatnonzero(finite)], sub[finite], rejected)


def _non_finite(pre: Preprocessor, row: np.ndarray) -> Rejection:
    names = [pre.feature_names[j] for j in np.flatnonzero(~np.isfinite(row))][:5]
    return Rejection(
        STAGE_PREPROCESS, f"non-finite feature(s): {', '.join(names)}", "non_finite_feature"
    )
