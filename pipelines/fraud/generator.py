"""Synthetic card transactions with a realistic fraud rate and a real, learnable signal.

About 0.5% of transactions are fraud. Fraud shows as: amounts far above the card's usual,
card-not-present purchases abroad in risky categories (electronics, digital goods, gambling),
bursts (many transactions in the last hour, seconds apart), and night hours. Being abroad alone
is not suspicious (travellers pay in shops), nor is e-commerce at home: the risk is in the
combination, which a linear model only half sees and an MLP learns. A fifth of fraud looks
ordinary, so no model is perfect.

Seeded: the same seed and the same calls give the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipelines.fraud.schema import CATEGORIES, CHANNELS, COUNTRIES, CURRENCIES, Transaction
from streaming.pipeline import SyntheticEvent

FRAUD_RATE = 0.005
INVALID_KINDS = (
    "malformed_json",
    "non_utf8",
    "oversized",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "not_an_object",
)
EXPECTED_STAGE = {
    "malformed_json": "decode",
    "non_utf8": "decode",
    "oversized": "decode",
    "missing_field": "validate",
    "wrong_type": "validate",
    "out_of_range": "validate",
    "not_an_object": "validate",
}
OVERSIZED_BYTES = 70_000

_HOME_P = np.array([0.18, 0.14, 0.14, 0.16, 0.08, 0.08, 0.06, 0.06, 0.04, 0.04, 0.01, 0.01])
_CURRENCY_OF = {
    "DE": "EUR",
    "FR": "EUR",
    "ES": "EUR",
    "IT": "EUR",
    "NL": "EUR",
    "GB": "GBP",
    "US": "USD",
    "PL": "PLN",
    "SE": "SEK",
    "CH": "CHF",
    "NG": "USD",
    "BR": "USD",
}
_LEGIT_CAT_P = np.array([0.30, 0.12, 0.18, 0.05, 0.05, 0.06, 0.01, 0.05, 0.10, 0.08])
_RISKY_CAT_P = np.array([0.02, 0.02, 0.02, 0.10, 0.34, 0.28, 0.16, 0.02, 0.02, 0.02])
_LEGIT_CHAN_P = np.array([0.62, 0.30, 0.05, 0.03])
_MS_PER_DAY = 86_400_000


class FraudGenerator:
    """Seeded generator of transaction events over a fixed population of cards."""

    def __init__(self, seed: int, n_cards: int = 50_000, fraud_rate: float = FRAUD_RATE) -> None:
        self.seed = seed
        self.fraud_rate = fraud_rate
        """Tests of label-based verdicts raise it to see enough fraud in a short run."""
        self._rng = np.random.default_rng(seed)
        self._count = 0
        rng = self._rng
        self._card_home = rng.choice(len(COUNTRIES), size=n_cards, p=_HOME_P)
        self._card_avg = np.round(np.exp(rng.normal(3.6, 0.7, size=n_cards)), 2)
        self._n_cards = n_cards

    # ------------------------------------------------------------------ drawing

    def _draw(self, ts_ms: np.ndarray, night: bool) -> tuple[dict[str, Any], np.ndarray]:
        """Columns of ``len(ts_ms)`` valid transactions and their fraud labels.

        ``night`` moves some fraud to 01:00-05:00 of its day: for training data only, since
        live events must carry their real send time (end-to-end latency starts there).
        """
        rng = self._rng
        n = len(ts_ms)
        card = rng.integers(0, self._n_cards, size=n)
        home = self._card_home[card]
        avg = self._card_avg[card]
        fraud = rng.random(n) < self.fraud_rate
        looks_ordinary = fraud & (rng.random(n) < 0.2)
        pattern_cnp = fraud & ~looks_ordinary & (rng.random(n) < 0.6)
        pattern_burst = fraud & ~looks_ordinary & ~pattern_cnp

        # ordinary behaviour
        amount = avg * np.exp(rng.normal(0.0, 0.55, size=n))
        abroad = rng.random(n) < 0.07
        country = np.where(abroad, rng.integers(0, len(COUNTRIES), size=n), home)
        channel = rng.choice(len(CHANNELS), size=n, p=_LEGIT_CHAN_P)
        # travellers mostly pay in shops; online shopping is mostly done at home
        channel = np.where(abroad & (rng.random(n) < 0.8), 0, channel)
        country = np.where((channel == 1) & ~abroad, home, country)
        category = rng.choice(len(CATEGORIES), size=n, p=_LEGIT_CAT_P)
        since = rng.exponential(6 * 3600.0, size=n)
        count_1h = rng.poisson(0.3, size=n)
        night_shift = np.zeros(n, dtype=np.int64)

        # card-not-present fraud abroad in risky categories, big amounts, often at night
        k = int(pattern_cnp.sum())
        if k:
            amount[pattern_cnp] = avg[pattern_cnp] * np.exp(rng.normal(1.3, 0.7, size=k))
            foreign_country = rng.integers(0, len(COUNTRIES), size=k)
            country[pattern_cnp] = np.where(
                foreign_country == home[pattern_cnp],
                (foreign_country + 3) % len(COUNTRIES),
                foreign_country,
            )
            channel[pattern_cnp] = rng.choice([1, 3], size=k, p=[0.85, 0.15])
            category[pattern_cnp] = rng.choice(len(CATEGORIES), size=k, p=_RISKY_CAT_P)
        # bursts: a stolen card used many times within minutes
        k = int(pattern_burst.sum())
        if k:
            amount[pattern_burst] = avg[pattern_burst] * np.exp(rng.normal(0.6, 0.6, size=k))
            count_1h[pattern_burst] = rng.poisson(5.0, size=k) + 2
            since[pattern_burst] = rng.exponential(90.0, size=k)
            category[pattern_burst] = rng.choice(len(CATEGORIES), size=k, p=_RISKY_CAT_P)
        late = (pattern_cnp | pattern_burst) & (rng.random(n) < 0.45)
        night_shift[late] = 1

        card_present = np.isin(channel, (0, 2))
        foreign = country != home
        distance = np.where(
            foreign, np.exp(rng.normal(7.0, 0.6, size=n)), rng.exponential(8.0, size=n)
        )
        ts = ts_ms.copy()
        if night and night_shift.any():
            # move to 01:00-04:59 UTC on the same day
            day_start = ts[late] - ts[late] % _MS_PER_DAY
            ts[late] = day_start + rng.integers(3_600_000, 5 * 3_600_000, size=int(late.sum()))
        cols = {
            "card": card,
            "ts_ms": ts,
            "amount": np.clip(np.round(amount, 2), 0.01, 1_000_000.0),
            "country": country,
            "home": home,
            "channel": channel,
            "category": category,
            "card_present": card_present,
            "distance": np.clip(np.round(distance, 1), 0.0, 20_000.0),
            "since": np.round(since, 1),
            "count_1h": np.minimum(count_1h, 10_000),
            "avg": avg,
        }
        return cols, fraud.astype(np.int8)

    def _dicts(self, cols: dict[str, Any]) -> list[dict[str, Any]]:
        n = len(cols["card"])
        first = self._count
        self._count += n
        prefix = f"{self.seed:x}-"
        out = []
        # .tolist() once per column: Python floats and ints, fast to serialise
        c = {k: v.tolist() for k, v in cols.items()}
        for i in range(n):
            country = COUNTRIES[c["country"][i]]
            out.append(
                {
                    "event_id": f"{prefix}{first + i:010d}",
                    "card_id": f"card-{c['card'][i]:06d}",
                    "ts_ms": c["ts_ms"][i],
                    "amount": c["amount"][i],
                    "currency": _CURRENCY_OF[country],
                    "merchant_category": CATEGORIES[c["category"][i]],
                    "country": country,
                    "channel": CHANNELS[c["channel"][i]],
                    "card_present": c["card_present"][i],
                    "home_country": COUNTRIES[c["home"][i]],
                    "distance_from_home_km": c["distance"][i],
                    "seconds_since_last_txn": c["since"][i],
                    "txn_count_1h": c["count_1h"][i],
                    "amount_avg_30d": c["avg"][i],
                }
            )
        return out

    # ------------------------------------------------------------------ public

    def batch(self, n: int, now_ms: int, invalid_ratio: float = 0.0) -> list[SyntheticEvent]:
        """``n`` events stamped ``now_ms``; a share ``invalid_ratio`` is invalid, of every kind."""
        cols, labels = self._draw(np.full(n, now_ms, dtype=np.int64), night=False)
        dicts = self._dicts(cols)
        invalid = self._rng.random(n) < invalid_ratio
        kinds = self._rng.integers(0, len(INVALID_KINDS), size=n)
        out = []
        dumps = json.dumps
        for i, d in enumerate(dicts):
            key = d["card_id"].encode()
            if invalid[i]:
                kind = INVALID_KINDS[kinds[i]]
                out.append(
                    SyntheticEvent(
                        key, self._corrupt(kind, d), d["event_id"], None, kind, EXPECTED_STAGE[kind]
                    )
                )
            else:
                value = dumps(d, separators=(",", ":")).encode()
                out.append(SyntheticEvent(key, value, d["event_id"], int(labels[i]), None, None))
        return out

    def _corrupt(self, kind: str, d: dict[str, Any]) -> bytes:
        """An invalid value that still contains the event id (so tests can find it)."""
        rng = self._rng
        text = json.dumps(d, separators=(",", ":"))
        if kind == "malformed_json":
            cut = text.index(',"card_id"') + int(rng.integers(5, 60))
            return text[:cut].encode()
        if kind == "non_utf8":
            return (
                text.replace('"card_id":"', '"card_id":"\udcff', 1)
                .encode("utf-8", "surrogateescape")
                .replace(b"\xff", b"\xff\xfe", 1)
            )
        if kind == "oversized":
            d = {**d, "note": "x" * OVERSIZED_BYTES}
        elif kind == "missing_field":
            d = {k: v for k, v in d.items() if k != "amount"}
        elif kind == "wrong_type":
            d = {
                **d,
                **(
                    {"amount": f"{d['amount']:.2f}"}
                    if rng.random() < 0.5
                    else {"card_present": "yes"}
                ),
            }
        elif kind == "out_of_range":
            d = {**d, **({"amount": -d["amount"]} if rng.random() < 0.5 else {"currency": "XXX"})}
        elif kind == "not_an_object":
            return json.dumps([d], separators=(",", ":")).encode()
        return json.dumps(d, separators=(",", ":")).encode()

    def training_data(
        self, n: int, start_ms: int = 1_760_000_000_000, days: int = 30
    ) -> tuple[list[Transaction], np.ndarray]:
        """``n`` valid transactions spread over ``days`` days, with their fraud labels."""
        ts = start_ms + self._rng.integers(0, days * _MS_PER_DAY, size=n)
        cols, labels = self._draw(np.asarray(ts, dtype=np.int64), night=True)
        return [Transaction(**d) for d in self._dicts(cols)], labels


def make_generator(seed: int) -> FraudGenerator:
    return FraudGenerator(seed)


__all__ = ["CURRENCIES", "FraudGenerator", "make_generator"]
