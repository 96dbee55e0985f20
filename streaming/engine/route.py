"""Each event -> one model version, by weight, sticky by key.

A key hashes to one of 10,000 buckets; versions own consecutive bucket ranges in proportion to
their weights. A card therefore stays on its version while weights hold, and raising a canary
from 10% to 20% moves only the cards in the 10% of buckets that change hands.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from streaming.engine.routing_rules import routing_problem

BUCKETS = 10_000


class Router:
    """Maps keys to version indexes; rebuilt (cheaply) whenever weights change."""

    def __init__(self, versions: Sequence[str], weights: Mapping[str, float]) -> None:
        problem = routing_problem(weights, {}, versions)
        if problem:
            raise ValueError(problem)
        w = np.array([float(weights.get(v, 0.0)) for v in versions])
        self.versions = tuple(versions)
        self.weights = {v: float(x) for v, x in zip(versions, w, strict=True)}
        edges = np.round(np.cumsum(w) / w.sum() * BUCKETS).astype(np.int64)
        # bucket b goes to the first version whose edge is above b
        self._owner = np.searchsorted(edges, np.arange(BUCKETS), side="right").astype(np.int16)
        self._only = int(np.flatnonzero(w)[0]) if np.count_nonzero(w) == 1 else None

    @staticmethod
    def buckets(keys: Sequence[bytes | None]) -> np.ndarray:
        """Each key's bucket in 0..BUCKETS-1 (keyless events spread by position)."""
        crc = zlib.crc32
        return np.fromiter(
            (crc(k) % BUCKETS if k is not None else i % BUCKETS for i, k in enumerate(keys)),
            dtype=np.int64,
            count=len(keys),
        )

    def route(self, keys: Sequence[bytes | None]) -> np.ndarray:
        """Version index per key. Events without a key are spread by position."""
        if self._only is not None:
            return np.full(len(keys), self._only, dtype=np.int16)
        return self._owner[self.buckets(keys)]
