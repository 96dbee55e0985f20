"""The state stage's aggregates compiled once per spec: for the Python path (windows grouped
by length, the row of values of an empty window) and as the C extension reads them.

``C_STATE`` is the extension (streaming.state._state_c), None where it was not built.
"""

from __future__ import annotations

from streaming.state.spec import StateSpec

try:
    from streaming.state import _state_c as C_STATE
except ImportError:  # built without a C compiler (or another array layout): Python alone
    C_STATE = None  # type: ignore[assignment]


def coded_fields(spec: StateSpec) -> list[bool]:
    """Per field of ``spec.fields``: whether it is only counted distinct (kept as codes)."""
    numeric = {a.field for a in spec.aggregates if a.kind != "distinct"}
    return [f not in numeric for f in spec.fields]


class Plan:
    """The aggregates compiled once: grouped by window as (window, [(slot, kind, col, cap)])
    with ``col`` the field's place in a row, and the row of values every aggregate takes
    when its window is empty."""

    def __init__(self, spec: StateSpec) -> None:
        col_of = {f: 2 + i for i, f in enumerate(spec.fields)}
        windows: dict[int, list[tuple[int, str, int, int]]] = {}
        empty = []
        for slot, a in enumerate(spec.aggregates):
            col = col_of[a.field] if a.field is not None else -1
            windows.setdefault(a.window_ms, []).append((slot, a.kind, col, a.cap))
            if a.kind in ("count", "sum", "distinct"):
                empty.append(0.0)
            elif a.kind == "since_last" and a.default == 0.0:
                empty.append(a.window_ms / 1000.0)
            else:
                empty.append(a.default)
        self.windows = sorted(windows.items())
        self.empty = empty
        self.native = _native_plan(spec, self.windows, empty)
        """The plan as the C path reads it (None without the extension)."""
        self.coded = coded_fields(spec)
        self.stride = 2 + len(spec.fields)
        self.coded_columns = [2 + i for i, c in enumerate(self.coded) if c]
        """Row positions of the distinct-only columns (vocabulary codes)."""


def _native_plan(
    spec: StateSpec, windows: list[tuple[int, list[tuple[int, str, int, int]]]], empty: list
) -> tuple | None:
    """The plan as ``C_STATE.apply`` reads it: (stride, grace, horizon, empty, windows) with
    kinds as the extension's codes; None without the extension."""
    if C_STATE is None:
        return None
    kind = {
        "count": C_STATE.COUNT,
        "since_last": C_STATE.SINCE_LAST,
        "sum": C_STATE.SUM,
        "mean": C_STATE.MEAN,
        "distinct": C_STATE.DISTINCT,
        "max": C_STATE.MAX,
        "last": C_STATE.LAST,
    }
    return (
        2 + len(spec.fields),
        spec.grace_ms,
        spec.horizon_ms,
        tuple(float(v) for v in empty),
        tuple(
            (window, tuple((slot, kind[k], col, cap) for slot, k, col, cap in aggs))
            for window, aggs in windows
        ),
    )
