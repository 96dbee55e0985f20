"""The fraud pipeline: strict schema, vectorised preprocessing, seeded realistic generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.fraud import PIPELINE
from pipelines.fraud.generator import EXPECTED_STAGE, INVALID_KINDS, FraudGenerator
from pipelines.fraud.preprocessing import fit_params, make_preprocessor
from pipelines.fraud.schema import Transaction
from pipelines.fraud.state import STATE
from streaming.state import history_features

NOW = 1_795_000_000_000


@pytest.fixture(scope="module")
def events() -> list:  # type: ignore[type-arg]
    return FraudGenerator(3).batch(20_000, NOW, invalid_ratio=0.05)


@pytest.fixture(scope="module")
def training() -> tuple[list[Transaction], np.ndarray, np.ndarray]:
    """A history, its labels and its state columns (the stage over it in order)."""
    records, labels = FraudGenerator(5, n_cards=2_000).training_data(20_000)  # cards with a past
    return records, labels, history_features(STATE, [r.card_id for r in records], records)


def test_valid_events_round_trip(events) -> None:  # type: ignore[no-untyped-def]
    for e in events[:500]:
        if e.invalid_kind is None:
            record = Transaction.model_validate_json(e.value)
            assert record.event_id == e.event_id and record.card_id.encode() == e.key
            assert record.ts_ms == NOW


@pytest.mark.parametrize(
    "change",
    [
        {"amount": "12.5"},
        {"card_present": "yes"},
        {"ts_ms": 1.5e12},
        {"amount": 0},
        {"currency": "XXX"},
        {"extra_field": 1},
        {"amount": 0.001},
        {"merchant_id": ""},
        {"country": "de"},
    ],
)
def test_the_schema_is_strict(events, change) -> None:  # type: ignore[no-untyped-def]
    good = json.loads(next(e.value for e in events if e.invalid_kind is None))
    with pytest.raises(ValidationError):
        Transaction.model_validate_json(json.dumps({**good, **change}))


def test_every_invalid_kind_is_refused_at_its_stage(events) -> None:  # type: ignore[no-untyped-def]
    invalid = [e for e in events if e.invalid_kind is not None]
    assert {e.invalid_kind for e in invalid} == set(INVALID_KINDS)
    for e in invalid:
        assert e.expected_stage == EXPECTED_STAGE[e.invalid_kind]
        assert e.event_id.encode() in e.value  # findable in the dead letters
        if e.invalid_kind == "oversized":
            assert len(e.value) > 65_536
            continue
        with pytest.raises(ValidationError):
            Transaction.model_validate_json(e.value)


def test_same_seed_same_bytes_and_unique_ids() -> None:
    a = FraudGenerator(11).batch(2_000, NOW, 0.1)
    b = FraudGenerator(11).batch(2_000, NOW, 0.1)
    assert [e.value for e in a] == [e.value for e in b]
    gen = FraudGenerator(11)
    ids = [e.event_id for _ in range(3) for e in gen.batch(1_000, NOW)]
    assert len(set(ids)) == len(ids)


def test_fraud_rate_and_invalid_ratio_are_realistic() -> None:
    events = FraudGenerator(1).batch(200_000, NOW, invalid_ratio=0.01)
    labels = [e.label for e in events if e.label is not None]
    assert 0.003 <= float(np.mean(labels)) <= 0.008
    invalid = sum(e.invalid_kind is not None for e in events)
    assert abs(invalid / len(events) - 0.01) < 0.002


def test_features_shape_dtype_and_standardisation(training) -> None:  # type: ignore[no-untyped-def]
    records, _, state = training
    pre = make_preprocessor(fit_params(records, state))
    x = pre.transform(records, state)
    assert x.shape == (len(records), len(pre.feature_names)) and x.dtype == np.float32
    assert x.flags.c_contiguous and np.isfinite(x).all()
    assert np.allclose(x[:, :8].mean(axis=0), 0, atol=1e-3)
    assert np.allclose(x[:, :8].std(axis=0), 1, atol=1e-3)
    sin, cos = x[:, 8], x[:, 9]
    assert np.allclose(sin**2 + cos**2, 1, atol=1e-5)
    one_hot_cat = x[:, 12:22]
    assert (one_hot_cat.sum(axis=1) == 1).all()
    assert pre.transform([], state[:0]).shape == (0, len(pre.feature_names))
    assert np.array_equal(pre.transform(records[:7], state[:7]), x[:7])  # batch-independent
    with pytest.raises(ValueError, match="state stage"):
        pre.transform(records[:7])


def test_unknown_category_gets_zeros_not_an_error(training) -> None:  # type: ignore[no-untyped-def]
    records, _, state = training
    params = fit_params(records, state)
    params["merchant_category"] = [c for c in params["merchant_category"] if c != "grocery"]
    pre = make_preprocessor(params)
    i = next(i for i, r in enumerate(records) if r.merchant_category == "grocery")
    row = pre.transform([records[i]], state[i : i + 1])[0]
    names = pre.feature_names
    cats = [i for i, n in enumerate(names) if n.startswith("category=")]
    assert row[cats].sum() == 0


def test_params_from_another_feature_version_are_refused(training) -> None:  # type: ignore[no-untyped-def]
    params = fit_params(training[0], training[2])
    with pytest.raises(ValueError, match="make models"):
        make_preprocessor({**params, "version": 99})


def test_the_signal_is_learnable(training) -> None:  # type: ignore[no-untyped-def]
    # Fraud differs from legitimate traffic on the features the model sees, the velocity
    # features the state stage computes included.
    records, labels, state = training
    pre = make_preprocessor(fit_params(records, state))
    x = pre.transform(records, state)
    fraud, legit = x[labels == 1], x[labels == 0]
    col = {n: i for i, n in enumerate(pre.feature_names)}
    assert fraud[:, col["log_amount_ratio"]].mean() > legit[:, col["log_amount_ratio"]].mean() + 0.5
    for name in ("log_txn_count_1h", "log_merchants_24h", "log_countries_24h"):
        assert fraud[:, col[name]].mean() > legit[:, col[name]].mean() + 0.5, name
    assert (
        fraud[:, col["log_seconds_since_last"]].mean()
        < legit[:, col["log_seconds_since_last"]].mean() - 0.5
    )


def test_the_pipeline_spec_names_real_fields() -> None:
    fields = Transaction.model_fields
    assert {PIPELINE.id_field, PIPELINE.ts_field} <= set(fields)
    assert isinstance(PIPELINE.make_generator(1), FraudGenerator)


def test_features_are_what_training_computed_row_for_row(training) -> None:  # type: ignore[no-untyped-def]
    # transform() is written for few numpy calls; it must compute exactly what the training
    # code's _numeric and the one-hot definition say, for any batch size and vocabulary
    from pipelines.fraud.preprocessing import NUMERIC, _numeric

    records, state = training[0][:3000], training[2][:3000]
    params = fit_params(records, state)
    params["channel"] = [c for c in params["channel"] if c != "pos"]  # an unknown value too
    pre = make_preprocessor(params)
    cols, angle = _numeric(records, state)
    k = len(NUMERIC)
    expected = np.zeros((len(records), len(pre.feature_names)), np.float32)
    expected[:, :k] = (cols - np.asarray(params["mean"])) / np.asarray(params["std"])
    expected[:, k] = np.sin(angle)
    expected[:, k + 1] = np.cos(angle)
    expected[:, k + 2] = [r.card_present for r in records]
    expected[:, k + 3] = [r.country != r.home_country for r in records]
    names = list(pre.feature_names)
    for i, r in enumerate(records):
        for name in (f"category={r.merchant_category}", f"channel={r.channel}"):
            if name in names:
                expected[i, names.index(name)] = 1.0
    assert any(r.channel == "pos" for r in records)
    for size in (1, 3, 12, 3000):
        got = np.concatenate(
            [
                pre.transform(records[i : i + size], state[i : i + size])
                for i in range(0, len(records), size)
            ]
        )
        assert np.array_equal(got, expected), size
