"""Explained rows: in their own batch where the explainer is cheap (``reasons.when``), else
published after the batch's other rows: which rows wait, keeping them in the version's backlog
(streaming.engine.explain_backlog), and, when it is due, one explainer call for all of them,
their reasons merged with the rules', and their publication in the order they were held
(streaming.decision.reasons.held_rows: a row to explain holds every later row of its key, so a
key's predictions stay in input order).

An explainer error costs the reasons from attributions, never the predictions.

Threads: each version's backlog is written and flushed by that version's inference thread only
(streaming.engine.scoring); ``backlogs`` maps versions to them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from streaming.config import PipelineConfig
from streaming.decision.decide import Decided
from streaming.decision.reasons import held_rows
from streaming.decision.reasons import merge as merge_reasons
from streaming.decision.stage import DecideStage
from streaming.engine.explain_backlog import ExplainBacklog, Held, held_chunk
from streaming.engine.output_variants import PrimaryOutput
from streaming.engine.types import Chunk
from streaming.engine.versions import ModelVersion

log = logging.getLogger("streaming.worker")

Count = Callable[
    [ModelVersion, np.ndarray, range | list[int], Mapping[int, Sequence[Any]] | None], None
]
"""The scorer's tally of published rows: decisions and reasons (Scorer._count)."""


class ExplainedRows:
    """The explained rows of one engine's primary outputs, per version."""

    def __init__(
        self,
        config: PipelineConfig,
        worker_id: str,
        primary: PrimaryOutput,
        encode: Callable[..., list[bytes]],
        count: Count,
        decide: Callable[[], DecideStage],
    ) -> None:
        self._config = config
        self._worker_id = worker_id
        self._primary = primary
        self._encode = encode
        self._count = count
        """The scorer's decision and reason counts of published rows."""
        self._decide = decide
        """The scorer's decide stage (the engine replaces it at start, so read it each time)."""
        self.backlogs: dict[str, ExplainBacklog] = {}
        """Per version: its held rows (each written by that version's thread only)."""

    def start(self, version: str) -> ExplainBacklog:
        """The version's backlog, made as its inference thread starts."""
        backlog = self.backlogs[version] = ExplainBacklog()
        return backlog

    def explain_in_batch(
        self, version: ModelVersion, features: np.ndarray, decided: Decided, finite: np.ndarray
    ) -> bool:
        """With an in-batch explainer (``Explanations.in_batch``): the batch's rows at or above
        review explained now, their reasons merged into ``decided.rule_reasons``, and True (the
        batch is then published whole, nothing held). False: explain by ``held`` and ``hold``,
        or not at all. An explainer error costs the reasons from attributions, never the
        predictions."""
        decide = self._decide()
        explanations = decide.explanations_for(version.name)
        if explanations is None or not explanations.in_batch:
            return False
        rows = np.flatnonzero(finite & (decided.score >= decide.review))
        if not rows.size:
            return True
        try:
            found = explanations.reasons(features[rows])
        except Exception:  # reasons are best effort; the decision stands
            log.exception("%s: the explainer failed on a batch", version.name)
            return True
        rules = decided.rule_reasons or {}
        merged = dict(rules)
        for i, given in zip(rows.tolist(), found, strict=True):
            fired = rules.get(i)
            # the explainer's own list is already merged: distinct codes, largest first
            merged[i] = merge_reasons(fired, given) if fired else given
        decided.rule_reasons = merged
        return True

    def held(
        self, version: ModelVersion, chunks: list[Chunk], decided: Decided, finite: np.ndarray
    ) -> np.ndarray | None:
        """Rows published after the explainer (streaming.decision.reasons.held_rows), or
        None when no row of the batch is explained."""
        decide = self._decide()
        if decide.explanations_for(version.name) is None:
            return None
        explain = finite & (decided.score >= decide.review)
        waiting = self.backlogs[version.name].keys if version.name in self.backlogs else ()
        if not waiting and not explain.any():
            return None
        keys = chunks[0].keys if len(chunks) == 1 else [k for c in chunks for k in c.keys]
        held = held_rows(keys, explain, waiting)
        return held if held.any() else None

    def hold(
        self,
        version: ModelVersion,
        features: np.ndarray,
        decided: Decided,
        later: list[tuple[Chunk, int, list[int]]],
        scored_ms: int,
    ) -> None:
        """The batch's held rows join the version's backlog, with what their predictions
        need (the batch's arrays are not kept)."""
        backlog = self.backlogs[version.name]
        review = self._decide().review
        rules = decided.rule_reasons or {}
        for c, off, rows in later:
            sub = np.asarray(rows) + off
            explain = np.flatnonzero(decided.score[sub] >= review)
            backlog.add(
                Held(
                    c,
                    rows,
                    decided.score[sub],
                    decided.codes[sub],
                    None
                    if decided.node_scores is None
                    else {k: v[sub] for k, v in decided.node_scores.items()},
                    {k: rules[off + i] for k, i in enumerate(rows) if off + i in rules},
                    explain.tolist(),
                    features[sub[explain]],
                    scored_ms,
                )
            )

    def flush(self, version: ModelVersion, backlog: ExplainBacklog) -> None:
        """Explain every held row that needs it in one call, then publish the held rows in
        the order they were held. An explainer error costs the reasons from attributions,
        never the predictions."""
        items = backlog.take()
        if not items:
            return
        cfg = self._config
        explanations = self._decide().explanations_for(version.name)
        assert explanations is not None
        parts = [it.features for it in items]
        features = parts[0] if len(parts) == 1 else np.concatenate(parts)
        try:
            found = explanations.reasons(features)
        except Exception:  # reasons are best effort; the decision stands
            log.exception("%s: the explainer failed on a batch", version.name)
            found = [[] for _ in range(len(features))]
        at = 0
        payloads: list[list[bytes]] = []
        for it in items:
            by_pos = dict(zip(it.explain, found[at : at + len(it.explain)], strict=True))
            at += len(it.explain)
            merged = {
                k: merge_reasons(it.rule_reasons.get(k, ()), by_pos.get(k, ()))
                for k in range(len(it.rows))
            }
            c, rows = it.chunk, it.rows
            payloads.append(
                self._encode(
                    [c.event_ids[i] for i in rows],
                    [c.ts_ms[i] for i in rows],
                    it.score,
                    model=cfg.model.name,
                    version=version.name,
                    threshold=cfg.model.threshold,
                    scored_ms=it.scored_ms,
                    worker=self._worker_id,
                    decisions=it.codes,
                    reasons=merged,
                    node_scores=it.node_scores,
                )
            )
            self._count(version, it.codes, range(len(rows)), merged)
        one = held_chunk(items)
        if one is not None:  # one publish for all of them
            sent = [p for part in payloads for p in part]
            self._primary.publish(version, one, range(len(one)), sent)
            return
        for it, part in zip(items, payloads, strict=True):
            full: list[bytes] = [b""] * len(it.chunk)
            for k, i in enumerate(it.rows):
                full[i] = part[k]
            self._primary.publish(version, it.chunk, it.rows, full)
