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
        n = len(records)
        out = np.zeros((n, len(self.feature_names)), dtype=np.float32)
        if n == 0:
            return out
        cols, angle = _numeric(records)
        k = len(NUMERIC)
        out[:, :k] = (cols - self._mean) / self._std
        out[:, k] = np.sin(angle)
        out[:, k + 1] = np.cos(angle)
        out[:, k + 2] = [r.card_present for r in records]
        out[:, k + 3] = [r.country != r.home_country for r in records]
        base = k + 4
        cats, chans = self._cats, self._chans
        rows = np.arange(n)
        cat_idx = np.array([cats.get(r.merchant_category, -1) for r in records])
        known = cat_idx >= 0
        out[rows[known], base + cat_idx[known]] = 1.0
        base += len(cats)
        chan_idx = np.array([chans.get(r.channel, -1) for r in records])
        known = chan_idx >= 0
        out[rows[known], base + chan_idx[known]] = 1.0
        return out


def make_preprocessor(params: Mapping[str, Any]) -> FraudPreprocessor:
    return FraudPreprocessor(params)
