"""Record fields -> numpy columns, on the feeding thread (streaming.engine.engine).

The decide stage runs on an inference thread that must not hold pydantic records per row (the
GIL it would take is the decoding thread's), so the few fields the graph's rules read travel
with the chunk as arrays, made once here.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import numpy as np


def make_columns(records: Sequence[Any], fields: Sequence[str]) -> dict[str, np.ndarray]:
    """One array per field: numbers as float64, booleans as bool, text as objects (the str
    objects the records hold: a numpy str array would copy each one, 2x the cost here). One
    ``map`` of an attrgetter per field: C loops, no tuple per record."""
    out: dict[str, np.ndarray] = {}
    for f in fields:
        values = list(map(attrgetter(f), records))
        first = values[0] if values else 0.0
        kind = bool if isinstance(first, bool) else object if isinstance(first, str) else np.float64
        out[f] = np.array(values, dtype=kind)
    return out


def take(columns: dict[str, np.ndarray] | None, rows: Any) -> dict[str, np.ndarray] | None:
    """The columns of some rows (a slice or indexes)."""
    if columns is None:
        return None
    return {k: v[rows] for k, v in columns.items()}


def concat(parts: Sequence[dict[str, np.ndarray] | None]) -> dict[str, np.ndarray] | None:
    """The columns of several chunks scored in one batch, in order."""
    if not parts or parts[0] is None:
        return None
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts if p is not None]) for k in parts[0]}
