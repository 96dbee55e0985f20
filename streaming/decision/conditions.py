"""Conditions evaluated over a whole batch at once: one numpy mask per test, no loop per row.

A batch's record fields arrive as columns (``Columns``: field name -> array), built on the
feeding thread (streaming.decision.columns), so the inference thread never touches a record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from streaming.decision.config import Condition

Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Batch:
    """What conditions read: record columns, the feature matrix, and the rules that fired."""

    columns: Columns
    features: np.ndarray
    feature_index: Mapping[str, int]
    hits: Mapping[str, np.ndarray]
    """Rule code -> where it fired (filled in as rules nodes run, before any switch)."""

    def __len__(self) -> int:
        return int(self.features.shape[0])


def evaluate(cond: Condition, batch: Batch) -> np.ndarray:
    """A bool mask, one per row of the batch."""
    if cond.all_ is not None:
        out = evaluate(cond.all_[0], batch)
        for c in cond.all_[1:]:
            out = out & evaluate(c, batch)
        return out
    if cond.any_ is not None:
        out = evaluate(cond.any_[0], batch)
        for c in cond.any_[1:]:
            out = out | evaluate(c, batch)
        return out
    if cond.not_ is not None:
        return ~evaluate(cond.not_, batch)
    if cond.rule is not None:
        return batch.hits[cond.rule]
    if cond.field is not None:
        left = batch.columns[cond.field]
    else:
        assert cond.feature is not None
        left = batch.features[:, batch.feature_index[cond.feature]]
    right = batch.columns[cond.value_field] if cond.value_field is not None else cond.value
    return _compare(left, cond.op, right)


def _compare(left: np.ndarray, op: str | None, right: object) -> np.ndarray:
    if op in ("in", "not_in"):
        assert isinstance(right, tuple)
        # a few == beat np.isin's sort on short lists (and work on object columns)
        inside = left == right[0]
        for value in right[1:]:
            inside |= left == value
        return inside if op == "in" else ~inside
    if op == "==":
        return np.asarray(left == right, dtype=bool)
    if op == "!=":
        return np.asarray(left != right, dtype=bool)
    if isinstance(right, str) or left.dtype.kind in "UO":
        raise TypeError(f"op {op} compares numbers; use ==, !=, in or not_in for text")
    if op == ">":
        return left > right  # type: ignore[operator]
    if op == ">=":
        return left >= right  # type: ignore[operator]
    if op == "<":
        return left < right  # type: ignore[operator]
    return left <= right  # type: ignore[operator]


def fields_needed(cond: Condition) -> set[str]:
    """Record fields a condition reads (the feeding thread builds only these columns)."""
    out: set[str] = set()
    for c in cond.walk():
        if c.field is not None:
            out.add(c.field)
        if c.value_field is not None:
            out.add(c.value_field)
    return out
