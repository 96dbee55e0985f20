"""Reasons on a prediction: the rules that fired, and (once wired) the model's attributions.

At most ``MAX_REASONS`` per prediction, largest weight first. Attributions come from the
explain package through one factory, :func:`make_explanations`, which returns None until
the lead wires it at merge; everything here is written against its interface:

    explainer.attributions(features (n, d) float32) -> (n, d) logit-space attributions
    reason_codes.top(attributions (n, d), k=4) -> list[list[Reason]]  (.code .text .weight)

Only rows at or above the review threshold are explained. How explaining keeps both
promises (see :func:`held_rows`): the rows of a batch that need no explanation are published
first, before the explainer runs, so they never wait for it; a row that needs one holds back
every later row of the same key in the batch with it, and those are published after it, in
input order, so predictions for one key stay in input order. The next batch is scored on the
same thread only after this one is published, so order holds across batches too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from streaming.config import PipelineConfig

MAX_REASONS = 4


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    text: str
    weight: float


class ReasonLike(Protocol):
    code: str
    text: str
    weight: float


class Explainer(Protocol):
    def attributions(self, features: np.ndarray) -> np.ndarray: ...


class ReasonCodes(Protocol):
    def top(self, attributions: np.ndarray, k: int = MAX_REASONS) -> list[list[Any]]: ...


@dataclass(frozen=True, slots=True)
class Explanations:
    """A model's explainer and the pipeline's feature -> reason code mapping."""

    explainer: Explainer
    reason_codes: ReasonCodes

    def reasons(self, features: np.ndarray) -> list[list[Any]]:
        """Reasons for each row of ``features`` (the rows to explain only)."""
        if features.shape[0] == 0:
            return []
        return self.reason_codes.top(self.explainer.attributions(features), MAX_REASONS)


def make_explanations(cfg: PipelineConfig, version: str) -> Explanations | None:
    """The attributions of ``version``'s model, or None: no explainer is wired yet (the
    explain package is built beside this one; the lead connects it here at merge)."""
    del cfg, version
    return None


def merge(rules: Sequence[ReasonLike], explained: Sequence[ReasonLike]) -> list[ReasonLike]:
    """Fired rules and attribution reasons, largest weight first, at most MAX_REASONS (a
    code given by both keeps its larger weight once)."""
    best: dict[str, ReasonLike] = {}
    for r in (*rules, *explained):
        kept = best.get(r.code)
        if kept is None or r.weight > kept.weight:
            best[r.code] = r
    return sorted(best.values(), key=lambda r: -r.weight)[:MAX_REASONS]


def held_rows(keys: Sequence[bytes | None], explain: np.ndarray) -> np.ndarray:
    """Rows published after the explainer: those to explain, and every later row of the
    same key (so a key's predictions stay in input order). The rest go out first."""
    held = explain.copy()
    if not held.any():
        return held
    waiting: set[bytes | None] = set()
    for i, key in enumerate(keys):
        if held[i]:
            waiting.add(key)
        elif key in waiting:
            held[i] = True
    return held


_EMPTY = "[]"


def reasons_json(reasons: Sequence[ReasonLike]) -> str:
    """The ``reasons`` field's JSON (``[]`` when none)."""
    if not reasons:
        return _EMPTY
    return json.dumps(
        [{"code": r.code, "text": r.text, "weight": round(float(r.weight), 6)} for r in reasons],
        ensure_ascii=False,
        separators=(",", ":"),
    )
