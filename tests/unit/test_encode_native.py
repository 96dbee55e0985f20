"""The C prediction encoder (streaming/engine/_encode.c) writes the Python's bytes exactly.

encode_predictions' f-strings are the reference: every case is encoded both ways and the
bytes compared, on hypothesis rows (event ids that need escaping or are not ASCII, floats of
every kind, integers past 64 bits, reasons, node scores with gaps) and on what the C declines.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.engine.outputs import C_ENCODE, encode_predictions
from streaming.explain.types import Reason

FIXED = {"model": "fraud", "version": "v2", "scored_ms": 1_700_000_000_123, "worker": "pod-1"}


def both(*args, **kwargs) -> list[bytes]:
    fast = encode_predictions(*args, **kwargs)
    slow = encode_predictions(*args, **kwargs, native=False)
    assert fast == slow
    return fast


def test_the_c_extension_is_built() -> None:
    assert C_ENCODE is not None, "streaming.engine._encode missing: pip install -e . again"


floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-7, 0.5, 0.123456789, 1e16, 5e-324]),
)
rows = st.lists(
    st.tuples(
        st.one_of(
            st.text(),
            st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
            st.text(st.characters(max_codepoint=127)),  # ASCII, quotes and controls included
        ),
        st.one_of(st.integers(-(2**70), 2**70), st.booleans()),
        floats,
        st.integers(0, 2),
        st.one_of(
            st.none(),
            st.lists(
                st.builds(Reason, st.text(min_size=1), st.text(), floats), min_size=1, max_size=4
            ),
        ),
        st.lists(st.one_of(st.just(math.nan), floats), min_size=3, max_size=3),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(rows=rows, threshold=floats, graph=st.booleans(), float32=st.booleans())
def test_c_encoding_is_the_pythons_byte_for_byte(rows, threshold, graph, float32) -> None:
    ids = [r[0] for r in rows]
    ts = [r[1] for r in rows]
    with np.errstate(over="ignore"):  # a float64 past float32's range is inf there
        scores = np.array([r[2] for r in rows], dtype=np.float32 if float32 else np.float64)
    codes = np.array([r[3] for r in rows], dtype=np.int8)
    reasons = {i: r[4] for i, r in enumerate(rows) if r[4]}
    nodes = (
        {name: np.array([r[5][j] for r in rows]) for j, name in enumerate(["v1", "b-2", "c.3"])}
        if graph
        else None
    )
    try:
        with np.errstate(over="ignore"):  # the threshold compared in float32
            both(ids, ts, scores, threshold=threshold, **FIXED)
        both(
            ids,
            ts,
            scores,
            threshold=threshold,
            decisions=codes,
            reasons=reasons,
            node_scores=nodes,
            **FIXED,
        )
    except UnicodeEncodeError:  # a lone surrogate: both ways refuse it alike (below)
        pass


def test_what_python_refuses_the_c_refuses_alike() -> None:
    for args in ((["\ud800"], [1]), ([None], [1])):
        errors = []
        for native in (True, False):
            with pytest.raises(Exception) as caught:  # the same type each way, checked below
                encode_predictions(*args, np.zeros(1), threshold=0.5, native=native, **FIXED)
            errors.append(type(caught.value))
        assert errors[0] is errors[1]


def test_codes_outside_the_three_decisions_are_left_to_the_python() -> None:
    ids, ts, scores = ["a", "b"], [1, 2], np.array([0.1, 0.9])
    # a negative index picks from the end, as the Python's tuple does: same bytes
    both(ids, ts, scores, threshold=0.5, decisions=np.array([-1, 2]), **FIXED)
    with pytest.raises(IndexError):
        encode_predictions(ids, ts, scores, threshold=0.5, decisions=np.array([7, 0]), **FIXED)


def test_ascii_ids_that_need_escaping_are_escaped_as_json_does() -> None:
    ids = ['a"b', "back\\slash", "tab\there", "\x01", "\x1f", "\x7f", "é", "😀", "plain-1"]
    out = both(ids, list(range(len(ids))), np.zeros(len(ids)), threshold=0.5, **FIXED)
    assert out[0].startswith(b'{"event_id":"a\\"b",')
