"""The join of ground-truth labels to predictions, without Kafka.

State that must survive a restart is per event, in two mappings the caller owns (faust tables
backed by changelog topics in the monitor, plain dicts in unit tests):

=============  ===========================================================================
``preds``      event_id -> {"v": version, "s": score, "t": scored_ms, "y": label or None,
               "lt": label_ts_ms, "o": the label's log position, "dup": True once a second
               label came, "late": True once a label came past the horizon, "lo": its
               position}
``pending``    event_id -> {"y", "lt", "o", "dup"}: labels that came before their prediction;
               kept until the horizon (a restarted monitor replays the prediction and joins
               it again), then marked ``"unknown": True`` if no prediction came
=============  ===========================================================================

Every count the monitor reports (tp/fp/fn/tn per window, labels by fate) is derived from
these per-event entries, never kept as a running total, and every change is one write to
one key: a crash between two writes of two tables cannot lose a label. A label replayed after
a crash (its offset was not committed yet) carries the same log position as the one already
applied, so it changes nothing; a real duplicate has another position, and the last one wins.
The per-window aggregates below are an in-memory index over ``preds``, rebuilt after a
restart.

Thread ownership: everything here runs on the monitor's event loop (faust agents and timer
share one thread), so no locks.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from streaming.config import PipelineConfig

TABLES = ("label-preds", "label-pending")
"""The join's faust tables; their changelogs are ``<monitor group>-<table>-changelog``."""

UNKNOWN_ID = "unknown_id"
PAST_HORIZON = "past_horizon"
Position = tuple[int, int] | list[int] | None
"""A label's (partition, offset) in the labels topic: what tells a replay from a duplicate."""


def changelog_topics(cfg: PipelineConfig) -> list[str]:
    """The changelog topics of the join's tables (faust names them app id, table, changelog)."""
    app_id = cfg.monitor.group or f"{cfg.kafka.group}-monitor"
    return [f"{app_id}-{name}-changelog" for name in TABLES]


class LabelError(ValueError):
    """A labels record that does not follow the contract; the message says which field."""


def parse_label(record: Any) -> tuple[str, int, int]:
    """(event_id, label, label_ts_ms) of a labels record, or LabelError saying what is wrong."""
    if not isinstance(record, dict):
        raise LabelError("a label must be a JSON object {event_id, label, label_ts_ms, source}")
    event_id = record.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise LabelError("event_id must be a non-empty string")
    label = record.get("label")
    if label not in (0, 1) or isinstance(label, bool):
        raise LabelError(f"label must be 0 or 1, got {label!r}")
    ts = record.get("label_ts_ms")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise LabelError(f"label_ts_ms must be an integer (ms since the epoch), got {ts!r}")
    return event_id, int(label), ts


@dataclass
class QualityWindow:
    """One version's predictions in one window of prediction time: event_id -> (score, y)."""

    version: str
    start_ms: int
    end_ms: int
    events: dict[str, tuple[float, int | None]] = field(default_factory=dict)


class LabelJoin:
    """Joins labels to predictions by event id; keeps the per-window index for quality."""

    def __init__(
        self,
        preds: MutableMapping[str, Any],
        pending: MutableMapping[str, Any],
        *,
        window_ms: int,
        horizon_ms: int,
    ) -> None:
        self.preds = preds
        self.pending = pending
        self.window_ms = window_ms
        self.horizon_ms = horizon_ms
        self.windows: dict[tuple[str, int], QualityWindow] = {}
        self.dirty: set[tuple[str, int]] = set()
        """Windows whose quality changed since the caller last took them."""
        self.invalid = 0
        """Labels records that break the contract (logged; not replay-safe)."""
        self.past_horizon_expired = 0
        """Late labels of windows already final and gone from ``preds`` (since the start)."""

    # ------------------------------------------------------------------ restore

    def rebuild(self) -> None:
        """The per-window index from ``preds`` (after the tables were restored)."""
        self.windows.clear()
        for event_id, entry in self.preds.items():
            self._index(str(event_id), entry)
        self.dirty = set(self.windows)

    def _index(self, event_id: str, entry: dict[str, Any]) -> None:
        t = int(entry["t"])
        start = t - t % self.window_ms
        key = (str(entry["v"]), start)
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = QualityWindow(key[0], start, start + self.window_ms)
        w.events[event_id] = (float(entry["s"]), entry.get("y"))
        self.dirty.add(key)

    # ------------------------------------------------------------------ records

    def add_prediction(self, record: dict[str, Any]) -> None:
        """A prediction; a duplicate (the worker is at-least-once) keeps the first."""
        event_id = str(record["event_id"])
        if event_id in self.preds:
            return
        entry: dict[str, Any] = {
            "v": str(record["version"]),
            "s": float(record["score"]),
            "t": int(record["scored_ms"]),
            "y": None,
        }
        waiting = self.pending.get(event_id)
        if waiting is not None and not waiting.get("unknown"):
            if int(waiting["lt"]) > entry["t"] + self.horizon_ms:
                entry.update(late=True, lo=waiting.get("o"))
            else:
                entry.update(y=int(waiting["y"]), lt=int(waiting["lt"]), o=waiting.get("o"))
            if waiting.get("dup"):
                entry["dup"] = True
        self.preds[event_id] = entry
        self._index(event_id, entry)

    def add_label(self, record: Any, position: Position = None) -> None:
        """A label read at ``position``; the last one for an event wins and counts once."""
        try:
            event_id, label, label_ts = parse_label(record)
        except LabelError:
            self.invalid += 1
            raise
        pos = list(position) if position is not None else None
        old = self.preds.get(event_id)
        if old is None:
            waiting = self.pending.get(event_id)
            if waiting is not None and (
                waiting.get("unknown") or (pos is not None and waiting.get("o") == pos)
            ):
                return  # counted already, or a replay after a restart
            new = {"y": label, "lt": label_ts, "o": pos}
            if waiting is not None:
                new["dup"] = True
            self.pending[event_id] = new
            return
        if pos is not None and pos in (old.get("o"), old.get("lo")):
            return  # a replay after a restart
        seen_before = old.get("y") is not None or bool(old.get("late"))
        if label_ts > int(old["t"]) + self.horizon_ms:
            dup = seen_before or bool(old.get("dup"))
            self.preds[event_id] = {**old, "late": True, "lo": pos, "dup": dup}
            return
        new = {**old, "y": label, "lt": label_ts, "o": pos, "dup": seen_before or old.get("dup")}
        self.preds[event_id] = new
        self._index(event_id, new)

    # ------------------------------------------------------------------ time

    def expire(self, now_ms: int) -> list[QualityWindow]:
        """Windows past the horizon (final), removed with their predictions; waiting labels
        past the horizon are marked ``unknown`` (and forgotten after a second horizon)."""
        for event_id, waiting in list(self.pending.items()):
            lt = int(waiting["lt"])
            if lt + 2 * self.horizon_ms < now_ms:
                del self.pending[event_id]
            elif (
                lt + self.horizon_ms < now_ms
                and not waiting.get("unknown")
                and event_id not in self.preds
            ):
                self.pending[event_id] = {**waiting, "unknown": True}
        done = [k for k, w in self.windows.items() if w.end_ms + self.horizon_ms <= now_ms]
        out = []
        for key in sorted(done, key=lambda k: (k[1], k[0])):
            w = self.windows.pop(key)
            self.dirty.discard(key)
            out.append(w)
            for event_id in w.events:
                entry = self.preds.pop(event_id, None)
                if entry is not None and entry.get("late"):
                    self.past_horizon_expired += 1
        return out

    def take_dirty(self) -> list[QualityWindow]:
        """Windows whose quality changed since the last call, oldest first."""
        keys = sorted(self.dirty, key=lambda k: (k[1], k[0]))
        self.dirty.clear()
        return [self.windows[k] for k in keys if k in self.windows]

    def label_counts(self) -> dict[str, int]:
        """Labels by fate: matched, waiting, duplicated events, and unmatched by reason
        (over the state held: about two horizons)."""
        matched = late = dup = 0
        for entry in self.preds.values():
            matched += entry.get("y") is not None
            late += bool(entry.get("late"))
            dup += bool(entry.get("dup"))
        unknown = waiting = 0
        for event_id, w in self.pending.items():
            if w.get("unknown"):
                unknown += 1
                dup += bool(w.get("dup"))
            elif event_id not in self.preds:
                waiting += 1
                dup += bool(w.get("dup"))
        return {
            "matched": matched,
            "waiting": waiting,
            "duplicates": dup,
            UNKNOWN_ID: unknown,
            PAST_HORIZON: late + self.past_horizon_expired,
        }
