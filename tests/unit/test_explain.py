"""streaming.explain's pure logic: reason codes from attributions, the config that maps
features to codes, exact integrated gradients of a ReLU network, and the metadata checks.

The networks here are numpy weights (pure logic); the built fraud models are explained in
tests/integration/test_explain_models.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from streaming.config import ConfigError, load_config
from streaming.config_sections import ReasonsConfig
from streaming.explain import ExplainError, Reason, ReasonCodes
from streaming.explain.baseline import read_explain_metadata
from streaming.explain.linear import ExactLinear
from streaming.explain.piecewise import PiecewiseLinearIG

FEATURES = ("amount", "ratio", "hour_sin", "hour_cos", "category=a", "category=b", "noise")


def reasons_config(**extra: object) -> ReasonsConfig:
    return ReasonsConfig.model_validate(
        {
            "codes": {
                "AMOUNT": {"text": "large amount", "features": ["amount", "ratio"]},
                "HOUR": {"text": "odd hour", "features": ["hour_*"]},
                "CATEGORY": {"text": "risky category", "features": ["category=*"]},
            },
            **extra,
        }
    )


# ---------------------------------------------------------------- reason codes


def test_codes_sum_their_features_and_list_positive_ones_largest_first() -> None:
    codes = ReasonCodes.from_config(reasons_config(), FEATURES)
    attr = np.array(
        [
            # AMOUNT 1.5, HOUR 0.9 (two features), CATEGORY -0.4: noise is in no code
            [1.0, 0.5, 0.4, 0.5, -0.3, -0.1, 9.0],
            # only HOUR is positive
            [-1.0, 0.2, 0.1, 0.0, 0.0, -2.0, 0.0],
            # nothing towards a positive score
            [-1.0, -1.0, -0.1, 0.0, 0.0, 0.0, 5.0],
        ]
    )
    top = codes.top(attr, k=4)
    assert top[0] == [Reason("AMOUNT", "large amount", 1.5), Reason("HOUR", "odd hour", 0.9)]
    assert top[1] == [Reason("HOUR", "odd hour", 0.1)]
    assert top[2] == []
    assert codes.unmapped_features == ("noise",)
    assert codes.top(attr, k=1)[0] == [Reason("AMOUNT", "large amount", 1.5)]
    assert codes.top(np.zeros((0, len(FEATURES)))) == []


def test_top_vectorised_matches_a_row_by_row_reference() -> None:
    codes = ReasonCodes.from_config(reasons_config(), FEATURES)
    attr = np.random.default_rng(3).normal(size=(500, len(FEATURES)))
    got = codes.top(attr, k=2)
    for row, reasons in zip(attr, got, strict=True):
        sums = {
            "AMOUNT": row[0] + row[1],
            "HOUR": row[2] + row[3],
            "CATEGORY": row[4] + row[5],
        }
        want = sorted(((round(v, 4), c) for c, v in sums.items() if round(v, 4) > 0), reverse=True)
        assert [(r.weight, r.code) for r in reasons] == want[:2]


def test_unmapped_features_can_have_a_code_of_their_own() -> None:
    cfg = reasons_config(unmapped={"code": "OTHER", "text": "other factors"})
    codes = ReasonCodes.from_config(cfg, FEATURES)
    assert codes.codes[-1] == "OTHER" and codes.unmapped_features == ()
    top = codes.top(np.array([[0, 0, 0, 0, 0, 0, 2.5]]))
    assert top == [[Reason("OTHER", "other factors", 2.5)]]


def test_a_feature_the_model_lacks_fails_with_its_path() -> None:
    cfg = ReasonsConfig.model_validate(
        {"codes": {"AMOUNT": {"text": "t", "features": ["amount", "amount_sum_24h"]}}}
    )
    with pytest.raises(ConfigError, match=r"reasons\.codes\.AMOUNT\.features\.1: 'amount_sum_24h'"):
        ReasonCodes.from_config(cfg, FEATURES)
    pattern = ReasonsConfig.model_validate({"codes": {"C": {"text": "t", "features": ["chan*"]}}})
    with pytest.raises(ConfigError, match=r"reasons\.codes\.C\.features\.0: 'chan\*'"):
        ReasonCodes.from_config(pattern, FEATURES)


def test_a_feature_in_two_codes_fails() -> None:
    cfg = ReasonsConfig.model_validate(
        {
            "codes": {
                "A": {"text": "t", "features": ["amount"]},
                "B": {"text": "t", "features": ["*amount*"]},
            }
        }
    )
    with pytest.raises(ConfigError, match=r"reasons\.codes\.B\.features\.0: 'amount' is already"):
        ReasonCodes.from_config(cfg, FEATURES)


def test_attributions_of_another_width_are_refused() -> None:
    codes = ReasonCodes.from_config(reasons_config(), FEATURES)
    with pytest.raises(ValueError, match=r"expected \(n, 7\)"):
        codes.top(np.zeros((2, 5)))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"codes": {"amount_high": {"text": "t", "features": ["a"]}}}, "upper case"),
        ({"codes": {"A": {"text": "t", "features": []}}}, "at least 1"),
        ({"codes": {"A": {"text": "t", "features": ["a"], "weight": 2}}}, "Extra inputs"),
        ({"codes": {"A": {"text": "t", "features": ["a"]}}, "steps": 64, "max_steps": 32}, ">="),
        (
            {
                "codes": {"A": {"text": "t", "features": ["a"]}},
                "unmapped": {"code": "A", "text": "t"},
            },
            "also one of codes",
        ),
        ({"codes": {"A": {"text": "t", "features": ["a"]}}, "method": "shap"}, "auto"),
    ],
)
def test_bad_reasons_sections_fail(section: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ReasonsConfig.model_validate(section)


def test_the_fraud_pipeline_maps_every_feature_of_its_model_to_one_code() -> None:
    """The shipped mapping loads against the fraud features (no model file needed: the
    preprocessor names them)."""
    from pipelines.fraud.preprocessing import NUMERIC, PARAMS_VERSION, make_preprocessor
    from pipelines.fraud.schema import CATEGORIES, CHANNELS

    cfg = load_config("pipelines/fraud/pipeline.yaml")
    params = {
        "version": PARAMS_VERSION,
        "numeric": list(NUMERIC),
        "mean": [0.0] * len(NUMERIC),
        "std": [1.0] * len(NUMERIC),
        "merchant_category": list(CATEGORIES),
        "channel": list(CHANNELS),
    }
    names = make_preprocessor(params).feature_names
    codes = ReasonCodes.from_config(cfg, names)
    assert codes.unmapped_features == ()
    assert "AMOUNT_ABOVE_USUAL" in codes.codes
    column = codes.membership[:, codes.codes.index("AMOUNT_ABOVE_USUAL")]
    assert [n for n, m in zip(names, column, strict=True) if m] == ["log_amount_ratio"]


# ---------------------------------------------------------------- exact integrated gradients


def relu_net(
    rng: np.random.Generator, widths: tuple[int, ...]
) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.5)
        for i, o in itertools.pairwise(widths)
    ]


def numeric_ig(net: PiecewiseLinearIG, x: np.ndarray, steps: int) -> np.ndarray:
    """Midpoint rule with central differences: no shared code with the exact method."""
    alphas = (np.arange(steps) + 0.5) / steps
    delta = x - net.baseline
    total = np.zeros_like(x)
    eps = 1e-6
    for a in alphas:
        point = net.baseline + a * delta
        for j in range(x.shape[1]):
            up, down = point.copy(), point.copy()
            up[:, j] += eps
            down[:, j] -= eps
            total[:, j] += (net.logits(up) - net.logits(down)) / (2 * eps)
    return delta * total / steps


@pytest.mark.parametrize("hidden", [(16, 8), (16,), (12, 10, 6)], ids=["2-layers", "1", "3"])
def test_piecewise_ig_is_complete_and_matches_a_fine_numeric_integral(hidden) -> None:
    rng = np.random.default_rng(11)
    dim = 6
    explainer = PiecewiseLinearIG(relu_net(rng, (dim, *hidden, 1)), rng.normal(size=dim))
    x = rng.normal(scale=2.0, size=(5, dim))
    result = explainer.explain(x)
    gap = result.attributions.sum(axis=1) - (
        explainer.logits(x) - explainer.logits(explainer.baseline[None])
    )
    assert np.max(np.abs(gap)) < 1e-9
    assert np.max(result.gap) < 1e-9
    assert np.all(result.steps >= 1)
    reference = numeric_ig(explainer, x, steps=4000)
    assert np.max(np.abs(result.attributions - reference)) < 5e-3


def test_piecewise_ig_of_a_linear_network_is_the_exact_linear_attribution() -> None:
    rng = np.random.default_rng(5)
    (w, c), baseline = relu_net(rng, (4, 1))[0], rng.normal(size=4)
    x = rng.normal(size=(7, 4))
    exact = ExactLinear(w.reshape(-1), float(c[0]), baseline).attributions(x)
    assert np.allclose(PiecewiseLinearIG([(w, c)], baseline).attributions(x), exact)
    assert np.allclose(exact.sum(axis=1), (x - baseline) @ w.reshape(-1))


# ---------------------------------------------------------------- metadata


def test_a_model_built_before_explanations_fails_with_the_fix(tmp_path) -> None:
    with pytest.raises(
        ExplainError, match=r"no explain\.baseline.*rebuild the model \(make models\)"
    ):
        read_explain_metadata(tmp_path, {"input_dim": 3})
    with pytest.raises(ExplainError, match=r"must be 3 finite numbers"):
        read_explain_metadata(tmp_path, {"input_dim": 3, "explain": {"baseline": [0.0, 1.0]}})
    meta = read_explain_metadata(
        tmp_path, {"input_dim": 2, "explain": {"baseline": [0.5, 1.0], "logit_module": "net"}}
    )
    assert meta.baseline.tolist() == [0.5, 1.0] and meta.logit_module == "net"


def test_relu_grad_x_input_is_the_gradient_at_the_row() -> None:
    from streaming.explain.piecewise import ReluGradientTimesInput

    rng = np.random.default_rng(8)
    dim = 5
    layers, baseline = relu_net(rng, (dim, 12, 6, 1)), rng.normal(size=dim)
    x = rng.normal(scale=2.0, size=(4, dim))
    cheap = ReluGradientTimesInput(layers, baseline)
    net = PiecewiseLinearIG(layers, baseline)
    eps = 1e-6
    step = eps * np.eye(dim)
    grads = np.column_stack(
        [(net.logits(x + step[j]) - net.logits(x - step[j])) / (2 * eps) for j in range(dim)]
    )
    assert np.allclose(cheap.attributions(x), grads * (x - baseline), atol=1e-6)


def test_large_products_are_cut_into_blocks_with_the_same_result() -> None:
    from streaming.explain.piecewise import BLAS_SINGLE_THREAD_MNK, _mm

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5_000, 64)), rng.normal(size=(64, 32))
    assert a.shape[0] * b.size > BLAS_SINGLE_THREAD_MNK  # several blocks
    assert np.allclose(_mm(a, b), a @ b)
