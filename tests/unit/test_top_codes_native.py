"""The C reason codes (streaming/explain/_top_codes.c) against the numpy reference.

``ReasonCodes.top`` has two paths: one C call, and the numpy it replaced (``native=False``),
kept as the fallback. Both must give the same reasons, in the same order, for any attributions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streaming.explain.reasons import C_TOP, ReasonCodes
from streaming.explain.types import Reason


def _codes(owner: list[int], ncodes: int) -> ReasonCodes:
    membership = np.zeros((len(owner), ncodes))
    for j, c in enumerate(owner):
        if c >= 0:
            membership[j, c] = 1.0
    return ReasonCodes(
        [(f"CODE_{c}", f"text {c} é") for c in range(ncodes)],
        membership,
        [f"f{j}" for j in range(len(owner))],
    )


def _both(codes: ReasonCodes, attr: np.ndarray, k: int = 4) -> tuple[list, list]:
    return codes.top(attr, k), codes.top(attr, k, native=False)


def test_the_extension_is_built():
    assert C_TOP is not None, "streaming.explain._top_codes missing: pip install -e . again"


def test_codes_are_summed_rounded_and_ranked_as_numpy_does():
    codes = _codes([0, 0, 1, 2, -1, 3, 3], 5)
    attr = np.array(
        [
            [0.5, 0.25, 0.1, 2.0, 9.0, -0.3, 0.1],  # code 2 first; the unmapped 9.0 is in none
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # nothing positive: no reasons
            [0.3, 0.0, 0.3, 0.3, 0.0, 0.3, 0.0],  # four equal weights: the config's order
            [1e-5, 0.0, 4e-5, 6e-5, 0.0, 0.0, 0.0],  # rounds to 0, 0, 1e-4: one reason
        ]
    )
    native, reference = _both(codes, attr)
    assert native == reference
    assert [r.code for r in native[0]] == ["CODE_2", "CODE_0", "CODE_1"]
    assert native[0][1] == Reason("CODE_0", "text 0 é", 0.75)
    assert native[1] == []
    assert [r.code for r in native[2]] == ["CODE_0", "CODE_1", "CODE_2", "CODE_3"]
    assert native[3] == [Reason("CODE_2", "text 2 é", 1e-4)]
    assert _both(codes, attr, k=2)[0] == [row[:2] for row in reference]
    assert _both(codes, attr, k=9)[0] == codes.top(attr, 9, native=False)  # k past the codes
    assert codes.top(np.zeros((0, 7))) == []


def test_a_sum_on_a_rounding_half_rounds_alike():
    # 9 x 5e-5 is 4.5e-4 to within the last bit, and which side of it a sum lands on decides
    # 0.0004 or 0.0005: both paths add in feature order (a BLAS product did not, found by the
    # property test below)
    attr = np.full((2, 11), 5e-5)
    attr[1, :2] = 0.0
    native, reference = _both(_codes([0] * 11, 1), attr, k=1)
    assert native == reference
    assert native[1] == [Reason("CODE_0", "text 0 é", 0.0005)]


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    ncodes=st.integers(1, 9),
    d=st.integers(1, 12),
    n=st.integers(0, 6),
    k=st.integers(1, 6),
)
def test_native_and_numpy_agree_on_any_attributions(data, ncodes, d, n, k):
    owner = data.draw(st.lists(st.integers(-1, ncodes - 1), min_size=d, max_size=d))
    values = st.one_of(
        st.floats(-5, 5, allow_nan=False),
        st.sampled_from([0.0, -0.0, 0.5, 0.25, 1e-4, 5e-5, -5e-5, 1.5e-4]),  # ties, halves
    )
    attr = data.draw(arrays(np.float64, (n, d), elements=values))
    native, reference = _both(_codes(owner, ncodes), attr, k)
    assert native == reference


def test_strided_and_float32_attributions_are_read_as_numpy_reads_them():
    codes = _codes([0, 1, 2], 3)
    wide = np.arange(24, dtype=np.float64).reshape(4, 6) / 10 - 0.7
    assert codes.top(wide[:, ::2]) == codes.top(wide[:, ::2], native=False)
    assert codes.top(wide[:, :3].astype(np.float32)) == codes.top(
        wide[:, :3].astype(np.float32), native=False
    )


def test_bad_calls_are_refused_with_the_reason():
    assert C_TOP is not None
    codes, texts = ("A", "B"), ("a", "b")
    owner = np.array([0, 1, -1], dtype=np.int64)
    with pytest.raises(TypeError, match="float64"):
        C_TOP.top(np.zeros((2, 3), dtype=np.float32), owner, 4, Reason, codes, texts)
    with pytest.raises(TypeError, match="int64"):
        C_TOP.top(np.zeros((2, 3)), owner.astype(np.int32), 4, Reason, codes, texts)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        C_TOP.top(np.zeros((2, 4)), owner, 4, Reason, codes, texts)
    with pytest.raises(ValueError, match="owner"):
        C_TOP.top(np.zeros((2, 3)), np.array([0, 2, -1]), 4, Reason, codes, texts)
    with pytest.raises(ValueError, match="k >= 1"):
        C_TOP.top(np.zeros((2, 3)), owner, 0, Reason, codes, texts)

    def refuse(*_args):
        raise RuntimeError("no reasons today")

    with pytest.raises(RuntimeError, match="no reasons today"):  # an error is not swallowed
        C_TOP.top(np.ones((2, 3)), owner, 4, refuse, codes, texts)
    with pytest.raises(ValueError, match="one code"):
        ReasonCodes([("A", "a"), ("B", "b")], np.ones((3, 2)), ["x", "y", "z"])
