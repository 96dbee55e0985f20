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
    n = len(batch)
    mask = np.zeros(n, dtype=bool)
    rows = _rows(cond, batch, np.arange(n))
    mask[rows] = True
    return mask


def _rows(cond: Condition, batch: Batch, rows: np.ndarray) -> np.ndarray:
    """The rows (indexes, ascending) of ``rows`` where the condition holds. ``all`` tests
    each condition only on the rows the ones before it kept, and ``any`` only on the rows
    not yet taken: a rare first test makes the rest nearly free (text compares are Python
    calls per row), so the rarest test goes first."""
    if cond.all_ is not None:
        for c in cond.all_:
            if rows.size == 0:
                break
            rows = _rows(c, batch, rows)
        return rows
    if cond.any_ is not None:
        taken = np.zeros(len(batch), dtype=bool)
        left = rows
        for c in cond.any_:
            if left.size == 0:
                break
            hit = _rows(c, batch, left)
            if hit.size:
                taken[hit] = True
                left = left[~taken[left]]
        return rows[taken[rows]]
    if cond.not_ is not None:
        held = np.zeros(len(batch), dtype=bool)
        held[_rows(cond.not_, batch, rows)] = True
        return rows[~held[rows]]
    if cond.rule is not None:
        return rows[batch.hits[cond.rule][rows]]
    if cond.field is not None:
        left_values = batch.columns[cond.field][rows]
    else:
        assert cond.feature is not None
        left_values = batch.features[rows, batch.feature_index[cond.feature]]
    right = batch.columns[cond.value_field][rows] if cond.value_field is not None else cond.value
    return rows[_compare(left_values, cond.op, right)]


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
