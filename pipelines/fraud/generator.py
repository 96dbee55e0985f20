"""Synthetic card transactions with a realistic fraud rate and a real, learnable signal.

About 0.5% of transactions are fraud. Cards have habits: a home country, a usual amount, a
few usual merchants, a rate of use. Events are raw transactions; the velocity features are the
state stage's (streaming.state) to compute from each card's history. Fraud shows as amounts far
above the card's usual, card-not-present purchases abroad in risky categories at new
merchants, and bursts (a stolen card used many times within minutes). Being abroad alone is
not suspicious (travellers pay in shops), nor is e-commerce at home: the risk is in the
combination. A fifth of fraud looks ordinary, so no model is perfect.

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
_MERCHANTS_PER_COUNTRY = 2_000
GRACE_MS = 120_000
"""The fraud pipeline's grace period (pipelines/fraud/state.py reads it from here)."""
OUT_OF_ORDER_SHARE = 0.03
"""Histories: events that arrive after later ones, by less than the grace period."""
LATE_SHARE = 0.001
"""Histories: events that arrive past the grace period (scored as of now, not kept)."""


def _merchant(shop: int) -> str:
    return f"m-{shop:06d}"


class FraudGenerator:
    """Seeded generator of raw transactions over a fixed population of cards with habits."""

    def __init__(
        self,
        seed: int,
        n_cards: int = 50_000,
        fraud_rate: float = FRAUD_RATE,
        live_cards: int | None = None,
    ) -> None:
        self.seed = seed
        self.fraud_rate = fraud_rate
        """Tests of label-based verdicts raise it to see enough fraud in a short run."""
        self._rng = np.random.default_rng(seed)
        self._count = 0
        rng = self._rng
        self._card_home = rng.choice(len(COUNTRIES), size=n_cards, p=_HOME_P)
        self._card_avg = np.round(np.exp(rng.normal(3.6, 0.7, size=n_cards)), 2)
        # how often a card is used: a few cards are used every day, most a few times a month
        self._card_rate = rng.lognormal(0.0, 0.8, size=n_cards)
        self._card_rate /= self._card_rate.sum()
        # the card's usual merchants, in its home country's block of merchant ids
        home_block = self._card_home[:, None] * _MERCHANTS_PER_COUNTRY
        self._card_shops = home_block + rng.integers(0, _MERCHANTS_PER_COUNTRY, (n_cards, 6))
        self._n_cards = n_cards
        self._live_cards = live_cards or 100 * n_cards
        """Live batches: the cards in use, each with the habits of card ``id % n_cards``. Many
        (5,000,000 by default), so that a legitimate card is rarely seen twice within a run:
        live events all carry the send time, and a card seen again seconds later is what a
        burst of fraud looks like to the state stage."""

    # ------------------------------------------------------------------ drawing

    def _draw(
        self, card: np.ndarray, ts_ms: np.ndarray, fraud: np.ndarray, ids: np.ndarray | None = None
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Columns of raw transactions of ``card`` at ``ts_ms``, fraud where ``fraud`` says.

        Legitimate use follows the card's habits (usual amount, usual merchants, home country,
        travel now and then). Fraud: card-not-present purchases abroad in risky categories at
        new merchants, or a burst of purchases far above the card's usual; a fifth of it looks
        ordinary, so no model is perfect. The velocity of bursts comes from the times given.
        """
        rng = self._rng
        n = len(card)
        home = self._card_home[card]
        avg = self._card_avg[card]
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
        usual = rng.random(n) < 0.8
        shop = np.where(
            usual,
            self._card_shops[card, rng.integers(0, self._card_shops.shape[1], size=n)],
            country * _MERCHANTS_PER_COUNTRY + rng.integers(0, _MERCHANTS_PER_COUNTRY, size=n),
        )

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
        k = int(pattern_burst.sum())
        if k:
            amount[pattern_burst] = avg[pattern_burst] * np.exp(rng.normal(0.9, 0.6, size=k))
            category[pattern_burst] = rng.choice(len(CATEGORIES), size=k, p=_RISKY_CAT_P)
        bad_shop = pattern_cnp | pattern_burst
        shop[bad_shop] = country[bad_shop] * _MERCHANTS_PER_COUNTRY + rng.integers(
            0, _MERCHANTS_PER_COUNTRY, size=int(bad_shop.sum())
        )

        card_present = np.isin(channel, (0, 2))
        foreign = country != home
        distance = np.where(
            foreign, np.exp(rng.normal(7.0, 0.6, size=n)), rng.exponential(8.0, size=n)
        )
        cols = {
            "card": card if ids is None else ids,
            "ts_ms": ts_ms,
            "amount": np.clip(np.round(amount, 2), 0.01, 1_000_000.0),
            "country": country,
            "home": home,
            "channel": channel,
            "category": category,
            "card_present": card_present,
            "distance": np.clip(np.round(distance, 1), 0.0, 20_000.0),
            "shop": shop,
        }
        return cols, fraud.astype(np.int8)

    def _history(self, n: int, start_ms: int, days: int) -> tuple[dict[str, Any], np.ndarray]:
        """``n`` transactions over ``days`` days in arrival order (see ``history_columns``)."""
        rng = self._rng
        span = days * _MS_PER_DAY
        # fraud comes in episodes: a stolen card used 1-12 times within minutes
        n_fraud = round(n * self.fraud_rate)
        sizes = rng.integers(1, 13, size=max(n_fraud // 6, 1))
        sizes = sizes[np.cumsum(sizes) <= n_fraud] if n_fraud else sizes[:0]
        k = int(sizes.sum())
        episode_card = rng.choice(self._n_cards, size=len(sizes), p=self._card_rate)
        episode_start = start_ms + rng.integers(0, span, size=len(sizes))
        # seconds to minutes apart: each event's time is its episode's start plus the gaps so far
        gaps = rng.exponential(90_000.0, size=k).astype(np.int64)
        first = np.repeat(np.cumsum(sizes) - sizes, sizes)
        so_far = np.cumsum(gaps)
        fraud_ts = np.repeat(episode_start, sizes) + so_far - so_far[first] + gaps[first]
        card = np.concatenate(
            [
                rng.choice(self._n_cards, size=n - k, p=self._card_rate),
                np.repeat(episode_card, sizes),
            ]
        )
        ts = np.concatenate([start_ms + rng.integers(0, span, size=n - k), fraud_ts])
        fraud = np.concatenate([np.zeros(n - k, bool), np.ones(k, bool)])
        order = np.argsort(ts, kind="stable")
        card, ts, fraud = card[order], ts[order], fraud[order]
        # arrival order stays; some events carry an earlier time than their neighbours: a
        # terminal that sent late, within the grace period, and a few hours late (past it)
        u = rng.random(n)
        ts = ts - np.where(u < OUT_OF_ORDER_SHARE, rng.integers(0, GRACE_MS, size=n), 0)
        late = u > 1.0 - LATE_SHARE
        ts = ts - np.where(late, GRACE_MS + rng.integers(60_000, 6 * 3_600_000, size=n), 0)
        return self._draw(card, ts.astype(np.int64), fraud)

    def history_columns(
        self, n: int, start_ms: int = 1_760_000_000_000, days: int = 30
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Columns of ``n`` transactions over ``days`` days in the order they arrive, and the
        fraud labels: ``card`` (int), ``ts_ms``, ``amount``, ``country`` and ``merchant_id``
        (strings, as in the events), for the state check; fraud bursts are in the times."""
        cols, labels = self._history(n, start_ms, days)
        cols = {
            **cols,
            "country": np.array(COUNTRIES, dtype=object)[cols["country"]],
            "merchant_id": np.array([_merchant(s) for s in cols["shop"].tolist()], dtype=object),
        }
        return cols, labels

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
                    "merchant_id": _merchant(c["shop"][i]),
                    "country": country,
                    "channel": CHANNELS[c["channel"][i]],
                    "card_present": c["card_present"][i],
                    "home_country": COUNTRIES[c["home"][i]],
                    "distance_from_home_km": c["distance"][i],
                }
            )
        return out

    # ------------------------------------------------------------------ public

    def batch(self, n: int, now_ms: int, invalid_ratio: float = 0.0) -> list[SyntheticEvent]:
        """``n`` events stamped ``now_ms``; a share ``invalid_ratio`` is invalid, of every kind."""
        rng = self._rng
        fraud = rng.random(n) < self.fraud_rate
        ids = rng.integers(0, self._live_cards, size=n)
        # Fraud comes in episodes: a stolen card (any card, so that routing by key spreads
        # fraud evenly over versions, as the label-judged canaries need) used 1-6 times in a
        # row; its repeats show to the state stage as a burst.
        where = np.flatnonzero(fraud)
        if where.size:
            sizes = rng.integers(1, 7, size=where.size)
            ids[where] = np.repeat(rng.integers(0, self._live_cards, size=where.size), sizes)[
                : where.size
            ]
        cols, labels = self._draw(
            ids % self._n_cards, np.full(n, now_ms, dtype=np.int64), fraud, ids
        )
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
        """``n`` valid transactions over ``days`` days in arrival order, with their fraud
        labels: the history the state stage runs over in training."""
        cols, labels = self._history(n, start_ms, days)
        return [Transaction(**d) for d in self._dicts(cols)], labels


def make_generator(seed: int) -> FraudGenerator:
    return FraudGenerator(seed)


__all__ = ["CURRENCIES", "FraudGenerator", "make_generator"]
