"""Ground truth for the synthetic stream, as the labels topic would carry it in production.

Fraud is known from chargebacks, typically two to six weeks after the purchase (log-normal
around 20 days), and about one in ten frauds is never reported. A legitimate purchase is
confirmed when its dispute window closes without a chargeback (about 60 days here), or
earlier by an analyst's review; a share is never confirmed at all (the card was closed).
``time_scale`` divides every delay, so that a demo or a test sees weeks in seconds.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field

import numpy as np

from streaming.pipeline import SyntheticEvent

_DAY_S = 86_400.0
FRAUD_REPORTED = 0.90
LEGIT_CONFIRMED = 0.85
ANALYST_SHARE = 0.10
"""Of the confirmed legitimate events, the share an analyst reviews within a few days."""


@dataclass(order=True)
class PlannedLabel:
    due_s: float
    """Seconds after the event was sent (already divided by the time scale)."""
    key: bytes = field(compare=False)
    event_id: str = field(compare=False)
    label: int = field(compare=False)
    source: str = field(compare=False)

    def value(self, label_ts_ms: int) -> bytes:
        """The labels-topic value (the contract: event_id, label, label_ts_ms, source)."""
        return json.dumps(
            {
                "event_id": self.event_id,
                "label": self.label,
                "label_ts_ms": label_ts_ms,
                "source": self.source,
            }
        ).encode()


def plan_labels(
    events: list[SyntheticEvent], rng: np.random.Generator, time_scale: float
) -> list[PlannedLabel]:
    """The labels the events will get and when; unlabelled and invalid events get none."""
    if time_scale <= 0:
        raise ValueError("--label-time-scale must be > 0 (1 is real time)")
    out = []
    for ev in events:
        if ev.label is None:
            continue
        u = rng.random()
        if ev.label == 1:
            if u >= FRAUD_REPORTED:
                continue
            delay_s, source = float(rng.lognormal(np.log(20 * _DAY_S), 0.5)), "chargeback"
        else:
            if u >= LEGIT_CONFIRMED:
                continue
            if rng.random() < ANALYST_SHARE:
                delay_s, source = float(rng.uniform(1, 5) * _DAY_S), "analyst"
            else:
                delay_s, source = float(rng.normal(60, 2) * _DAY_S), "dispute_window_closed"
        out.append(PlannedLabel(delay_s / time_scale, ev.key, ev.event_id, ev.label, source))
    return out


class LabelQueue:
    """Labels waiting for their time, earliest first (owned by the producing thread)."""

    def __init__(self) -> None:
        self._heap: list[PlannedLabel] = []

    def add(self, sent_s: float, planned: list[PlannedLabel]) -> None:
        """Labels of events sent at ``sent_s`` (monotonic seconds)."""
        for p in planned:
            p.due_s += sent_s
            heapq.heappush(self._heap, p)

    def due(self, now_s: float) -> list[PlannedLabel]:
        """The labels whose time has come, removed from the queue."""
        out = []
        while self._heap and self._heap[0].due_s <= now_s:
            out.append(heapq.heappop(self._heap))
        return out

    def next_due_s(self) -> float | None:
        return self._heap[0].due_s if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)
