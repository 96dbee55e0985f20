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

import heapq
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
        self._counts = [0, 0, 0, 0, 0]
        """matched, late, dup, unknown, waiting: derived from the tables (see rebuild)."""
        self._due: list[tuple[int, str]] = []
        """(when to look again, event id) of the waiting labels: expiry without a scan."""

    # ------------------------------------------------------------------ restore

    def rebuild(self) -> None:
        """The per-window index from ``preds`` (after the tables were restored)."""
        self._reconcile()
        self.windows.clear()
        self._counts = [0, 0, 0, 0, 0]
        for event_id, entry in self.preds.items():
            self._index(str(event_id), entry)
            self._add(self._pred_part(entry), 1)
        self._due = []
        for event_id, w in self.pending.items():
            self._add(self._pending_part(str(event_id), w), 1)
            self._due.append((int(w["lt"]) + self.horizon_ms, str(event_id)))
        heapq.heapify(self._due)
        self.dirty = set(self.windows)

    def _reconcile(self) -> None:
        """Join waiting labels whose prediction is there after all.

        The tables are partitioned by event id, not like the topics; a monitor holding only
        part of the partitions (right after a restart, while the killed member is still in
        the group) can read a label whose prediction's entry it has not restored yet: the
        label waits, the entry comes with the next assignment, and neither would meet the
        other again. Labels of one event share a partition, so their positions order them:
        the waiting label wins only if it came after the one the entry holds.
        """
        for event_id, w in list(self.pending.items()):
            entry = self.preds.get(event_id)
            if entry is None or w.get("unknown"):
                continue
            pos, have = w.get("o"), entry.get("o") or entry.get("lo")
            if pos is None or (have is not None and list(have) >= list(pos)):
                continue
            seen_before = entry.get("y") is not None or bool(entry.get("late"))
            dup = seen_before or bool(entry.get("dup")) or bool(w.get("dup"))
            if int(w["lt"]) > int(entry["t"]) + self.horizon_ms:
                self.preds[event_id] = {**entry, "late": True, "lo": pos, "dup": dup}
            else:
                self.preds[event_id] = {**entry, "y": w["y"], "lt": w["lt"], "o": pos, "dup": dup}

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
        self._put_pred(event_id, entry)
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
            self._put_pending(event_id, new)
            heapq.heappush(self._due, (label_ts + self.horizon_ms, event_id))
            return
        if pos is not None and pos in (old.get("o"), old.get("lo")):
            return  # a replay after a restart
        seen_before = old.get("y") is not None or bool(old.get("late"))
        if label_ts > int(old["t"]) + self.horizon_ms:
            dup = seen_before or bool(old.get("dup"))
            self._put_pred(event_id, {**old, "late": True, "lo": pos, "dup": dup})
            return
        new = {**old, "y": label, "lt": label_ts, "o": pos, "dup": seen_before or old.get("dup")}
        self._put_pred(event_id, new)
        self._index(event_id, new)

    # ------------------------------------------------------------------ counting

    def _pred_part(self, entry: dict[str, Any]) -> tuple[int, int, int, int, int]:
        """(matched, late, dup, unknown, waiting) that one prediction entry contributes."""
        return (entry.get("y") is not None, bool(entry.get("late")), bool(entry.get("dup")), 0, 0)

    def _pending_part(self, event_id: str, w: dict[str, Any]) -> tuple[int, int, int, int, int]:
        if w.get("unknown"):
            return (0, 0, bool(w.get("dup")), 1, 0)
        if event_id not in self.preds:
            return (0, 0, bool(w.get("dup")), 0, 1)
        return (0, 0, 0, 0, 0)  # joined: its prediction's entry counts it

    def _add(self, part: tuple[int, int, int, int, int], sign: int) -> None:
        for i, n in enumerate(part):
            self._counts[i] += sign * n

    def _put_pred(self, event_id: str, new: dict[str, Any] | None) -> None:
        """The one way ``preds`` changes: keeps the label counts in step with the tables."""
        old = self.preds.get(event_id)
        waiting = self.pending.get(event_id)
        if waiting is not None:
            self._add(self._pending_part(event_id, waiting), -1)
        if old is not None:
            self._add(self._pred_part(old), -1)
        if new is None:
            self.preds.pop(event_id, None)
        else:
            self.preds[event_id] = new
            self._add(self._pred_part(new), 1)
        if waiting is not None:
            self._add(self._pending_part(event_id, waiting), 1)

    def _put_pending(self, event_id: str, new: dict[str, Any] | None) -> None:
        """The one way ``pending`` changes (see :meth:`_put_pred`)."""
        old = self.pending.get(event_id)
        if old is not None:
            self._add(self._pending_part(event_id, old), -1)
        if new is None:
            self.pending.pop(event_id, None)
        else:
            self.pending[event_id] = new
            self._add(self._pending_part(event_id, new), 1)

    # ------------------------------------------------------------------ time

    def expire(self, now_ms: int) -> list[QualityWindow]:
        """Windows past the horizon (final), removed with their predictions; waiting labels
        past the horizon are marked ``unknown`` (and forgotten after a second horizon)."""
        while self._due and self._due[0][0] < now_ms:
            _, event_id = heapq.heappop(self._due)
            waiting = self.pending.get(event_id)
            if waiting is None:
                continue
            lt = int(waiting["lt"])
            if lt + 2 * self.horizon_ms < now_ms:
                self._put_pending(event_id, None)
            elif lt + self.horizon_ms >= now_ms:
                heapq.heappush(self._due, (lt + self.horizon_ms, event_id))  # a later label
            else:
                if not waiting.get("unknown") and event_id not in self.preds:
                    self._put_pending(event_id, {**waiting, "unknown": True})
                heapq.heappush(self._due, (lt + 2 * self.horizon_ms, event_id))
        done = [k for k, w in self.windows.items() if w.end_ms + self.horizon_ms <= now_ms]
        out = []
        for key in sorted(done, key=lambda k: (k[1], k[0])):
            w = self.windows.pop(key)
            self.dirty.discard(key)
            out.append(w)
            for event_id in w.events:
                entry = self.preds.get(event_id)
                if entry is not None and entry.get("late"):
                    self.past_horizon_expired += 1
                if entry is not None:
                    self._put_pred(event_id, None)
        return out

    def take_dirty(self) -> list[QualityWindow]:
        """Windows whose quality changed since the last call, oldest first."""
        keys = sorted(self.dirty, key=lambda k: (k[1], k[0]))
        self.dirty.clear()
        return [self.windows[k] for k in keys if k in self.windows]

    def label_counts(self) -> dict[str, int]:
        """Labels by fate: matched, waiting, duplicated events, and unmatched by reason
        (over the state held: about two horizons). Kept in step with every write."""
        matched, late, dup, unknown, waiting = self._counts
        return {
            "matched": matched,
            "waiting": waiting,
            "duplicates": dup,
            UNKNOWN_ID: unknown,
            PAST_HORIZON: late + self.past_horizon_expired,
        }
