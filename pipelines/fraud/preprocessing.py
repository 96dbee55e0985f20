"""Transactions -> float32 features, a whole batch at a time.

The standardisation parameters and category vocabularies are fitted at training time and saved
with the model (metadata.json), so serving computes exactly what training computed, and a
reordered category list can never silently shuffle one-hot columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.fraud.schema import CATEGORIES, CHANNELS, Transaction

NUMERIC = (
    "log_amount",
    "log_amount_ratio",
    "log_distance_km",
    "log_seconds_since_last",
    "log_txn_count_1h",
)
_MS_PER_DAY = 86_400_000
PARAMS_VERSION = 1


def _numeric(records: Sequence[Transaction]) -> tuple[np.ndarray, np.ndarray]:
    """Raw numeric columns (before standardisation) and the hour-of-day angle."""
    raw = np.array(
        [
            (
                r.amount,
                r.amount_avg_30d,
                r.distance_from_home_km,
                r.seconds_since_last_txn,
                r.txn_count_1h,
                r.ts_ms % _MS_PER_DAY,
            )
            for r in records
        ],
        dtype=np.float64,
    ).reshape(len(records), 6)
    amount, avg, dist, since, count, ms_of_day = raw.T
    cols = np.column_stack(
        [
            np.log1p(amount),
            np.log1p(amount / avg),
            np.log1p(dist),
            np.log1p(since),
            np.log1p(count),
        ]
    )
    return cols, ms_of_day * (2 * np.pi / _MS_PER_DAY)


def fit_params(records: Sequence[Transaction]) -> dict[str, Any]:
    """Standardisation and vocabularies from training records (JSON-serialisable)."""
    cols, _ = _numeric(records)
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

    def transform(self, records: Sequence[Transaction]) -> np.ndarray:
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
        m = np.array(
            [
                (
                    r.amount,
                    r.amount_avg_30d,
                    r.distance_from_home_km,
                    r.seconds_since_last_txn,
                    r.txn_count_1h,
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
        out = np.zeros((n, width + 1), dtype=np.float32)
        m[:, 1] = m[:, 0] / m[:, 1]  # log_amount_ratio: amount / avg, as in _numeric
        out[:, :k] = (np.log1p(m[:, :k]) - self._mean) / self._std
        angle = m[:, 5] * (2 * np.pi / _MS_PER_DAY)
        out[:, k] = np.sin(angle)
        out[:, k + 1] = np.cos(angle)
        out[:, k + 2 : k + 4] = m[:, 6:8]
        out[np.arange(n)[:, None], m[:, 8:10].astype(np.intp)] = 1.0
        return np.ascontiguousarray(out[:, :width])


def make_preprocessor(params: Mapping[str, Any]) -> FraudPreprocessor:
    return FraudPreprocessor(params)
