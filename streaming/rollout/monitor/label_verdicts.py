"""Canary verdicts on fraud caught: recall against the baseline's in the same window.

Labels mature long after a window closed, so a window is re-judged each time its quality
changes; the last verdict of a (canary, window) is the one in force. A canary is rolled back
when its ``bad_windows`` most recent windows judged on labels all fail (insufficient ones do
not count either way), as the score-based verdicts do with consecutive windows.

A window is judged only once its predictions are all in (none came for ``grace_s``:
:class:`SettledWindows`; and every predictions partition read up to where it ended ``grace_s``
ago: :class:`CaughtUp`): recall over the predictions joined so far is biased whenever the
order in which predictions reach the topic depends on their score, and it does: a worker
publishes the rows it explains (at or above review: most of the frauds a version catches)
after the rest of their batch, and, while it drains a backlog, after later batches too
(streaming.engine.explain_backlog). A monitor reading such a log behind the worker sees the
explained version's unflagged frauds before its flagged ones.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streaming.config import MonitorConfig
from streaming.rollout.monitor.quality import RecallTest


@dataclass
class LabelJudge:
    """Owns the label verdicts per canary and window (the monitor's event loop writes them)."""

    cfg: MonitorConfig
    verdicts: dict[str, dict[int, str]] = field(default_factory=dict)
    """canary -> window start -> last verdict (ok, fail, insufficient)."""
    rolled_back: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.test = RecallTest(
            self.cfg.max_recall_drop, self.cfg.recall_confidence, self.cfg.min_labels
        )

    def judge(
        self,
        quality: dict[tuple[str, int], dict[str, Any]],
        changed: list[tuple[str, int]],
        *,
        model: str,
        baseline: str,
        canaries: list[str],
    ) -> list[dict[str, Any]]:
        """Verdict records for the canaries' changed windows that carry labelled frauds."""
        out = []
        starts = sorted({start for _, start in changed})
        for start in starts:
            base = quality.get((baseline, start))
            for version in canaries:
                q = quality.get((version, start))
                if q is None or base is None or q["tp"] + q["fn"] == 0:
                    continue
                verdict, why = self._one(q, base)
                self.verdicts.setdefault(version, {})[start] = verdict
                out.append(
                    {
                        "basis": "labels",
                        "model": model,
                        "version": version,
                        "role": "canary",
                        "verdict": verdict,
                        "reasons": [why],
                        "compared_with": baseline,
                        "window_start_ms": start,
                        "window_end_ms": q["window_end_ms"],
                        "recall": q["recall"],
                        "baseline_recall": base["recall"],
                        "labelled": q["labelled"],
                        "final": q["final"],
                    }
                )
        return out

    def _one(self, q: dict[str, Any], base: dict[str, Any]) -> tuple[str, str]:
        fq = q["flagged"] / q["predictions"] if q["predictions"] else 0.0
        fb = base["flagged"] / base["predictions"] if base["predictions"] else 0.0
        if abs(fq - fb) > self.cfg.max_flagged_delta:
            # Recall bought with more flags (or lost with fewer) is not comparable: the
            # flag-share check judges that window.
            return "insufficient", (
                f"flags {fq:.2%} vs the baseline's {fb:.2%}: recall not compared at "
                "different flag rates"
            )
        return self.test.judge(q, base)

    def failing_streak(self, version: str) -> list[int] | None:
        """The failing windows' starts when the canary's last ``bad_windows`` judged windows
        all failed (and it was not rolled back for it already), else None."""
        if version in self.rolled_back:
            return None
        judged = sorted(
            (s, v) for s, v in self.verdicts.get(version, {}).items() if v != "insufficient"
        )
        last = judged[-self.cfg.bad_windows :]
        if len(last) == self.cfg.bad_windows and all(v == "fail" for _, v in last):
            return [s for s, _ in last]
        return None


@dataclass
class SettledWindows:
    """Which windows' predictions are all in: none of them came for ``quiet_s`` (the
    monitor's ``grace_s``).

    When the monitor keeps up, that is the window's end plus grace, as for the score-based
    verdicts; when it reads a backlog, it is once it has read past the window, however long
    that takes. Measured (tests/integration/test_labels.py's canary run, judged on every
    quality tick): the worker drained the 12,000 events in 0.19 s, the monitor read them over
    seconds, and at the tick that rolled the good canary back it had read 1,761 of its 3,626
    predictions with 1.08% of them flagged (4.33% in the end; the baseline 4.15%): recall
    56% there, 86% on all of them.
    """

    quiet_s: float
    clock: Callable[[], float] = time.monotonic
    last: dict[int, float] = field(default_factory=dict)
    """Window start -> when a prediction of it last came."""

    def saw(self, starts: Iterable[int]) -> None:
        """Predictions (or, after a restart, restored ones) of these windows came now."""
        now = self.clock()
        for start in starts:
            self.last[start] = now

    def settled(self, start: int) -> bool:
        """A window the monitor never saw a prediction of has none to wait for."""
        seen = self.last.get(start)
        return seen is None or self.clock() - seen >= self.quiet_s

    def keep(self, starts: Iterable[int]) -> None:
        """Forget the windows not in ``starts`` (gone past the horizon)."""
        held = set(starts)
        self.last = {s: t for s, t in self.last.items() if s in held}


@dataclass
class CaughtUp:
    """Whether the monitor has read every prediction that was on the topic ``lag_s`` ago.

    Quiet alone (:class:`SettledWindows`) is not proof that a window's predictions are all in:
    a monitor reading a backlog can stop reading predictions for longer than ``grace_s`` (its
    labels agent busy), and then judged the prefix it had read (seen at full size: a canary
    judged on 41 of its 166 labelled frauds). So a window is also judged only when the
    monitor's read position on every predictions partition has reached the end that partition
    had ``lag_s`` ago: a monitor that keeps up passes at once under steady traffic, and one
    reading a backlog does not pass until it has read it.
    """

    lag_s: float
    snapshots: deque[tuple[float, dict[Hashable, int]]] = field(default_factory=deque)
    """(when, end offset per partition), oldest first: what the check compares with. Called
    on every quality tick, so consecutive snapshots are a tick apart; one older than twice
    ``lag_s`` means the checks stopped for a while, and history starts again."""

    def check(
        self, now: float, read: Mapping[Hashable, int | None], ends: Mapping[Hashable, int | None]
    ) -> bool:
        """Record the ends now (next offset to be written; None where not known yet) and say
        whether ``read`` (last offset read per partition) reached those of ``lag_s`` ago."""
        self.snapshots.append((now, {tp: e for tp, e in ends.items() if e is not None}))
        while len(self.snapshots) > 1 and now - self.snapshots[1][0] >= self.lag_s:
            self.snapshots.popleft()  # the newest one old enough is kept
        taken, old = self.snapshots[0]
        if now - taken < self.lag_s:
            return False
        if now - taken > 2 * self.lag_s:  # not checked for a while: those ends are stale
            self.snapshots = deque([self.snapshots[-1]])
            return False
        # one offset short counts as read: under exactly-once the last offset of a partition is
        # a transaction's commit marker, which no consumer is handed
        return all(end <= 0 or _next(read.get(tp)) + 1 >= end for tp, end in old.items())


def _next(offset: int | None) -> int:
    """The offset after the last one read (0 when none was)."""
    return 0 if offset is None else offset + 1
