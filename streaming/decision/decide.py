"""Scores -> decision codes (0 approve, 1 review, 2 decline), and what a batch's decide stage
hands to the outputs: per row the decision, the final score, node scores and reasons."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streaming.decision.reasons import ReasonLike

APPROVE, REVIEW, DECLINE = 0, 1, 2


def threshold_codes(scores: np.ndarray, review: float, decline: float) -> np.ndarray:
    """0, 1 or 2 per row: at or above review counts 1, at or above decline counts 2."""
    return (scores >= review).astype(np.int8) + (scores >= decline).astype(np.int8)


def apply_overrides(codes: np.ndarray, overrides: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Rule overrides, in the order listed: on each row the first override whose rule fired
    applies. ``review`` / ``decline`` raise the decision to at least that (a rule never
    lowers one); ``approve`` approves whatever the score (an allow-list)."""
    if not overrides:
        return codes
    taken = np.zeros(codes.shape[0], dtype=bool)
    for hit, code in overrides:
        rows = hit & ~taken
        if code == APPROVE:
            codes[rows] = APPROVE
        else:
            codes[rows] = np.maximum(codes[rows], code)
        taken |= hit
    return codes


@dataclass(slots=True)
class Decided:
    """The decide stage's result for one batch (or, after :meth:`part`, one chunk)."""

    score: np.ndarray
    """The score that met the thresholds (the decision node's input), float."""
    codes: np.ndarray
    """int8 decision codes."""
    node_scores: dict[str, np.ndarray] | None = None
    """Per model and challenger node: its score, NaN on rows it did not score (a switch's
    other branch). None without a graph."""
    rule_reasons: dict[int, list[ReasonLike]] | None = None
    """Row -> the rules that fired on it (rows with none are absent); with an in-batch
    explainer, its explained rows' reasons merged in (streaming.engine.explained)."""

    def part(self, start: int, stop: int) -> Decided:
        """The rows start..stop, renumbered from 0."""
        reasons = None
        if self.rule_reasons:
            reasons = {i - start: r for i, r in self.rule_reasons.items() if start <= i < stop}
        return Decided(
            self.score[start:stop],
            self.codes[start:stop],
            None
            if self.node_scores is None
            else {k: v[start:stop] for k, v in self.node_scores.items()},
            reasons,
        )
