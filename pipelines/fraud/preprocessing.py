"""Transactions and their state columns -> float32 features, a whole batch at a time.

The velocity features (``log_seconds_since_last``, ``log_txn_count_1h``, the 30-day average in
``log_amount_ratio``, the 24 h sum and distinct counts) come from the state stage's columns
(pipelines/fraud/state.py), computed by the same code in training and serving.

The standardisation parameters and category vocabularies are fitted at training time and saved
with the model (metadata.json), so serving computes exactly what training computed, and a
reordered category list can never silently shuffle one-hot columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.fraud.schema import CATEGORIES, CHANNELS, Transaction
from pipelines.fraud.state import STATE

NUMERIC = (
    "log_amount",
    "log_amount_ratio",
    "log_distance_km",
    "log_seconds_since_last",
    "log_txn_count_1h",
    "log_amount_sum_24h",
    "log_countries_24h",
    "log_merchants_24h",
)
_MS_PER_DAY = 86_400_000
PARAMS_VERSION = 2
_STATE_COLS = [
    STATE.names.index(n)
    for n in (
        "amount_avg_30d",
        "seconds_since_last_txn",
        "txn_count_1h",
        "amount_sum_24h",
        "countries_24h",
        "merchants_24h",
    )
]


def _state(state: np.ndarray | None, n: int) -> np.ndarray:
    if state is None or state.shape != (n, len(STATE.aggregates)):
        got = None if state is None else state.shape
        raise ValueError(
            f"the fraud features need the state stage's columns ({n}, "
            f"{len(STATE.aggregates)}), got {got}: run the records through pipelines.fraud.STATE"
        )
    return state[:, _STATE_COLS]


def _ratio(amount: np.ndarray, avg: np.ndarray) -> np.ndarray:
    """Amount over the card's 30-day average; 1 for a card without history."""
    return amount / np.where(avg > 0, avg, amount)


def _numeric(
    records: Sequence[Transaction], state: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw numeric columns (before standardisation) and the hour-of-day angle."""
    raw = np.array(
        [(r.amount, r.distance_from_home_km, r.ts_ms % _MS_PER_DAY) for r in records],
        dtype=np.float64,
    ).reshape(len(records), 3)
    amount, dist, ms_of_day = raw.T
    avg, since, count, sum24, countries, merchants = _state(state, len(records)).T
    cols = np.column_stack(
        [
            np.log1p(amount),
            np.log1p(_ratio(amount, avg)),
            np.log1p(dist),
            np.log1p(since),
            np.log1p(count),
            np.log1p(sum24),
            np.log1p(countries),
            np.log1p(merchants),
        ]
    )
    return cols, ms_of_day * (2 * np.pi / _MS_PER_DAY)


def fit_params(records: Sequence[Transaction], state: np.ndarray | None) -> dict[str, Any]:
    """Standardisation and vocabularies from training records (JSON-serialisable)."""
    cols, _ = _numeric(records, state)
    std = cols.std(axis=0)
    return {
        "version": PARAMS_VERSION,
        "numeric": list(NUMERIC),
        "mean": cols.mean(axis=0).round(8).tolist(),
        "std": np.where(std > 1e-9, std, 1.0).round(8).tolist(),
        "merchant_category": list(CATEGORIES),
        "channel": list(CHANNELS),
    }


class FraudPreprocessor:
    """Vectorised feature builder; unknown categories get an all-zero one-hot, never an error."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        if params.get("version") != PARAMS_VERSION or list(params["numeric"]) != list(NUMERIC):
            raise ValueError(
                "preprocessing parameters are from another feature version; "
                "rebuild the model (make models)"
            )
        self._mean = np.asarray(params["mean"], dtype=np.float64)
        self._std = np.asarray(params["std"], dtype=np.float64)
        self._cats = {c: i for i, c in enumerate(params["merchant_category"])}
        self._chans = {c: i for i, c in enumerate(params["channel"])}
        base = len(NUMERIC) + 4
        self._cat_col = {c: base + i for c, i in self._cats.items()}
        self._chan_col = {c: base + len(self._cats) + i for c, i in self._chans.items()}
        self.feature_names: tuple[str, ...] = (
            *NUMERIC,
            "hour_sin",
            "hour_cos",
            "card_present",
            "foreign",
            *(f"category={c}" for c in params["merchant_category"]),
            *(f"channel={c}" for c in params["channel"]),
        )

    def transform(
        self, records: Sequence[Transaction], state: np.ndarray | None = None
    ) -> np.ndarray:
        """One pass over the records in Python, then whole-column numpy: at low rates a batch
        is a few rows, and numpy's fixed cost per call (not the rows) is most of what it costs,
        so the calls are few. Computes exactly what ``_numeric`` (training) does."""
        n = len(records)
        width = len(self.feature_names)
        if n == 0:
            return np.zeros((0, width), dtype=np.float32)
        k = len(NUMERIC)
        # one-hot columns by value; an unknown category lands in a spare last column that is
        # cut off below (an all-zero one-hot, never an error)
        cat_col, chan_col = self._cat_col, self._chan_col
        cols = _state(state, n)
        m = np.array(
            [
                (
                    r.amount,
                    r.distance_from_home_km,
                    r.ts_ms % _MS_PER_DAY,
                    r.card_present,
                    r.country != r.home_country,
                    cat_col.get(r.merchant_category, width),
                    chan_col.get(r.channel, width),
                )
                for r in records
            ],
            dtype=np.float64,
        )
        num = np.empty((n, k), dtype=np.float64)  # in NUMERIC order, as in _numeric
        num[:, 0] = m[:, 0]
        num[:, 1] = _ratio(m[:, 0], cols[:, 0])
        num[:, 2] = m[:, 1]
        num[:, 3:] = cols[:, 1:]
        out = np.zeros((n, width + 1), dtype=np.float32)
        out[:, :k] = (np.log1p(num) - self._mean) / self._std
        angle = m[:, 2] * (2 * np.pi / _MS_PER_DAY)
        out[:, k] = np.sin(angle)
        out[:, k + 1] = np.cos(angle)
        out[:, k + 2 : k + 4] = m[:, 3:5]
        out[np.arange(n)[:, None], m[:, 5:7].astype(np.intp)] = 1.0
        return np.ascontiguousarray(out[:, :width])


def make_preprocessor(params: Mapping[str, Any]) -> FraudPreprocessor:
    return FraudPreprocessor(params)
