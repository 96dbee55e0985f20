"""The per-card velocity features the worker computes from each card's history (the state
stage, streaming.state): the same declaration in training and serving."""

from __future__ import annotations

from pipelines.fraud.generator import GRACE_MS
from streaming.state import Aggregate, StateSpec

_HOUR = 3_600_000
_DAY = 24 * _HOUR

STATE = StateSpec(
    ts_field="ts_ms",
    grace_ms=GRACE_MS,
    replay_margin_ms=_HOUR,
    aggregates=(
        Aggregate("txn_count_1h", "count", _HOUR),
        Aggregate("seconds_since_last_txn", "since_last", 30 * _DAY),
        Aggregate("amount_avg_30d", "mean", 30 * _DAY, "amount"),
        Aggregate("amount_sum_24h", "sum", _DAY, "amount"),
        Aggregate("countries_24h", "distinct", _DAY, "country", cap=16),
        Aggregate("merchants_24h", "distinct", _DAY, "merchant_id", cap=64),
    ),
)
"""Without history, ``amount_avg_30d`` is 0 (the preprocessor then takes the amount itself)
and ``seconds_since_last_txn`` is 30 days."""
