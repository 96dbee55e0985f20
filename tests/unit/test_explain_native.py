"""The C integrated gradients (streaming/explain/_relu_ig.c) against the numpy reference.

Both are exact, so they must agree to float64 rounding on every row: random networks of
several widths, rows near and far from the baseline, and the paths' degenerate cases (a unit
whose slope along the path is 0, units that cross at the same point, a unit at 0 at the
baseline, the baseline itself). Pure logic on numpy weights; the fraud models' own rows are
explained in tests/integration/test_explain_models.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.explain.piecewise import C_IG, PiecewiseLinearIG


def relu_net(rng: np.random.Generator, widths: tuple[int, ...]) -> list[tuple[np.ndarray, ...]]:
    return [
        (rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.5)
        for i, o in itertools.pairwise(widths)
    ]


def both(layers, baseline) -> tuple[PiecewiseLinearIG, PiecewiseLinearIG]:
    fast = PiecewiseLinearIG(layers, baseline)
    assert fast._native is not None, "the C path is not in use"
    return fast, PiecewiseLinearIG(layers, baseline, native=False)


def assert_same(fast: PiecewiseLinearIG, ref: PiecewiseLinearIG, x: np.ndarray) -> None:
    got, want = fast.attributions(x), ref.attributions(x)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    assert np.max(np.abs(got - want), initial=0.0) <= 1e-9 * scale
    logit = fast.logits(x) - fast.logits(fast.baseline[None])
    assert np.max(np.abs(got.sum(axis=1) - logit), initial=0.0) <= 1e-9 * scale  # complete


def test_the_c_extension_is_built() -> None:
    assert C_IG is not None, "streaming.explain._relu_ig missing: pip install -e . again"


@pytest.mark.parametrize("widths", [(6, 16, 8), (26, 64, 32), (3, 2, 40), (9, 1, 1)])
@pytest.mark.parametrize("scale", [0.01, 1.0, 4.0, 50.0])
def test_c_attributions_equal_numpy_on_random_networks(widths, scale) -> None:
    rng = np.random.default_rng(sum(widths) + int(scale * 100))
    fast, ref = both(relu_net(rng, (*widths, 1)), rng.normal(size=widths[0]))
    x = fast.baseline + rng.normal(scale=scale, size=(40, widths[0]))
    assert_same(fast, ref, x)


def test_degenerate_paths_equal_numpy() -> None:
    rng = np.random.default_rng(3)
    d = 5
    layers = relu_net(rng, (d, 12, 7, 1))
    (w1, c1), rest = layers[0], layers[1:]
    w1[0] = 0.0  # slope 0 along every path: never crosses
    w1[1] = w1[2]  # two units with the same weights and bias: they cross together
    c1[2] = c1[1]
    baseline = np.zeros(d)
    c1[3] = 0.0  # at 0 at the baseline: its crossing is at a = 0, which does not cut
    w1[4] = -w1[5]  # opposite slopes, both at 0 at the baseline
    c1[4] = c1[5] = 0.0
    fast, ref = both([(w1, c1), *rest], baseline)
    x = np.concatenate(
        [
            baseline[None],  # the baseline: all zero
            rng.normal(size=(30, d)),
            np.eye(d),  # one feature moved
        ]
    )
    assert_same(fast, ref, x)
    assert np.all(fast.attributions(baseline[None]) == 0.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(1, 8),
    h1=st.integers(1, 24),
    h2=st.integers(1, 12),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_c_attributions_equal_numpy_hypothesis(seed, d, h1, h2, scale) -> None:
    rng = np.random.default_rng(seed)
    fast, ref = both(relu_net(rng, (d, h1, h2, 1)), rng.normal(size=d))
    assert_same(fast, ref, fast.baseline + rng.normal(scale=scale, size=(8, d)))


def test_other_depths_and_inputs_take_the_numpy_way() -> None:
    rng = np.random.default_rng(4)
    assert PiecewiseLinearIG(relu_net(rng, (4, 6, 1)), np.zeros(4))._native is None
    assert PiecewiseLinearIG(relu_net(rng, (4, 6, 5, 3, 1)), np.zeros(4))._native is None
    fast, ref = both(relu_net(rng, (4, 6, 5, 1)), np.zeros(4))
    x32 = rng.normal(size=(5, 4)).astype(np.float32)  # converted, not refused
    assert np.allclose(fast.attributions(x32), ref.attributions(x32), atol=1e-9)
    assert fast.attributions(np.zeros((0, 4))).shape == (0, 4)


def test_buffers_of_the_wrong_size_or_type_are_refused() -> None:
    rng = np.random.default_rng(6)
    fast, _ = both(relu_net(rng, (4, 6, 5, 1)), np.zeros(4))
    w = fast._native
    x = rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="buffer sizes"):
        C_IG.relu2_attributions(*w, x, np.empty((3, 5)))
    with pytest.raises(ValueError, match="buffer sizes"):
        C_IG.relu2_attributions(*w, np.empty((3, 3)), np.empty((3, 3)))
    with pytest.raises(TypeError, match="float64"):
        C_IG.relu2_attributions(*w, x.astype(np.float32), np.empty((3, 4)))
    with pytest.raises(TypeError):
        C_IG.relu2_attributions(*w, x)
