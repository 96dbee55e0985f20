"""The decision graph over one batch, in-process, with numpy row masks.

Each node is computed only on the rows something asks of it, and once: a switch asks its
``then`` node for the matching rows only (the heavy model never sees the others), an ensemble
asks its inputs for the rows it was asked for, and a model shared by two nodes is called once
per row. Runs on the carrier version's inference thread, which owns everything here for the
length of one ``run`` (nothing is kept between batches).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from streaming.decision.conditions import Batch, Columns, evaluate
from streaming.decision.config import (
    DECISIONS,
    ChallengerNode,
    Condition,
    EnsembleNode,
    GraphConfig,
    ModelNode,
    SwitchNode,
)
from streaming.decision.decide import Decided, apply_overrides, threshold_codes
from streaming.decision.reasons import MAX_REASONS
from streaming.explain.types import Reason

Predict = Callable[[np.ndarray], np.ndarray]
_EPS = 1e-7


class NodeError(RuntimeError):
    """A node failed on a batch; the message starts with the node's config path."""


@dataclass(frozen=True, slots=True)
class _Rule:
    reason: Reason
    when: Condition
    path: str


class DecisionGraph:
    """A checked graph, bound to the loaded models (streaming.decision.stage builds it)."""

    def __init__(
        self,
        config: GraphConfig,
        predict: Mapping[str, Predict],
        feature_names: tuple[str, ...],
        thresholds: tuple[float, float],
    ) -> None:
        self._nodes = dict(config.nodes)
        self._predict = dict(predict)
        """Version -> its runtime's predict (called on this thread only)."""
        self._feature_index = {f: i for i, f in enumerate(feature_names)}
        self._rules = [
            _Rule(Reason(r.code, r.text, r.weight), r.when, f"decision.graph.nodes.{n}.rules[{i}]")
            for n, i, r in config.rules()
        ]
        self.decision_name, node = config.decision_node()
        self._decision = node
        self.review = thresholds[0] if node.review_threshold is None else node.review_threshold
        self.decline = thresholds[1] if node.decline_threshold is None else node.decline_threshold
        self.scored_nodes = tuple(
            n for n, d in self._nodes.items() if isinstance(d, ModelNode | ChallengerNode)
        )
        """The nodes whose scores the prediction's ``scores`` carries."""
        self._challengers = tuple(
            n for n, d in self._nodes.items() if isinstance(d, ChallengerNode)
        )

    def run(self, features: np.ndarray, columns: Columns | None) -> Decided:
        """Scores, decisions, node scores and fired rules for every row of the batch."""
        return _Run(self, features, columns or {}).result()


class _Run:
    """One batch through the graph (its masks and memo live as long as the call)."""

    def __init__(self, graph: DecisionGraph, features: np.ndarray, columns: Columns) -> None:
        self.g = graph
        self.n = int(features.shape[0])
        self.features = features
        self.batch = Batch(columns, features, graph._feature_index, {})
        self.memo: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        """Node -> (scores, rows computed): NaN where not computed."""

    def result(self) -> Decided:
        g, n = self.g, self.n
        hits = self.batch.hits
        fired: list[tuple[Reason, np.ndarray]] = []
        for rule in g._rules:
            mask = self._mask(rule.when, f"{rule.path}.when")
            hits[rule.reason.code] = mask  # type: ignore[index]
            fired.append((rule.reason, mask))
        every = np.ones(n, dtype=bool)
        score = self.score(g._decision.input, every).copy()
        for name in g._challengers:
            when = g._nodes[name].when  # type: ignore[union-attr]
            rows = every if when is None else self._mask(when, f"decision.graph.nodes.{name}.when")
            if rows.any():
                self.score(name, rows)
        codes = threshold_codes(score, g.review, g.decline)
        apply_overrides(
            codes,
            [(hits[o.rule], DECISIONS.index(o.decision)) for o in g._decision.overrides],
        )
        node_scores = {}
        for name in g.scored_nodes:
            vals, done = self.memo.get(name) or (np.full(n, np.nan), np.zeros(n, bool))
            bad = done & ~np.isfinite(vals)
            if bad.any():
                if name in g._challengers:  # never decides: its score is left out, no more
                    vals[bad] = np.nan
                else:  # refuses the row, as a model's non-finite score does without a graph
                    score[bad] = np.nan
            node_scores[name] = vals
        return Decided(score, codes, node_scores, _rule_reasons(fired, n))

    def _mask(self, cond: Condition, path: str) -> np.ndarray:
        try:
            return evaluate(cond, self.batch)
        except Exception as exc:
            raise NodeError(f"{path}: {type(exc).__name__}: {exc}") from exc

    def score(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The node's scores, valid at least on ``rows`` (computed where still missing)."""
        got = self.memo.get(name)
        if got is None:
            got = self.memo[name] = (np.full(self.n, np.nan), np.zeros(self.n, bool))
        vals, done = got
        need = rows & ~done
        if need.any():
            self._compute(name, need, vals)
            done |= need
        return vals

    def _compute(self, name: str, need: np.ndarray, vals: np.ndarray) -> None:
        node = self.g._nodes[name]
        path = f"decision.graph.nodes.{name}"
        if isinstance(node, ModelNode | ChallengerNode):
            if np.count_nonzero(need) * 2 >= self.n:
                # most rows: score them all in one call (a second call for the rest, say a
                # switch's other branch that ends in the same model, costs more than rows)
                need |= True
            x = self.features if need.all() else self.features[need]
            try:
                vals[need] = self.g._predict[node.version](x)
            except Exception as exc:
                raise NodeError(f"{path} ({node.version}): {type(exc).__name__}: {exc}") from exc
        elif isinstance(node, SwitchNode):
            m = self._mask(node.when, f"{path}.when")
            branches = [(node.then, need & m), (node.else_, need & ~m)]
            if np.count_nonzero(branches[0][1]) < np.count_nonzero(branches[1][1]):
                branches.reverse()  # the larger first: a model both share scores it whole
            for target, rows in branches:
                if rows.any():
                    vals[rows] = self.score(target, rows)[rows]
        elif isinstance(node, EnsembleNode):
            parts = [self.score(i, need)[need] for i in node.inputs]
            vals[need] = combine(node, parts)
        else:  # rules and decision nodes give no score; the config check refuses such inputs
            raise NodeError(f"{path}: a {type(node).__name__} has no score")


def combine(node: EnsembleNode, parts: list[np.ndarray]) -> np.ndarray:
    """An ensemble's score from its inputs' scores (float64, inputs summed in order)."""
    if node.method == "max":
        out = np.asarray(parts[0], dtype=np.float64)
        for p in parts[1:]:
            out = np.maximum(out, p)
        return out
    if node.method == "mean":
        w = node.weights or (1.0,) * len(parts)
        total = sum(w)
        out = (w[0] / total) * np.asarray(parts[0], dtype=np.float64)
        for wi, p in zip(w[1:], parts[1:], strict=True):
            out += (wi / total) * np.asarray(p, dtype=np.float64)
        return out
    assert node.coefficients is not None
    z = np.full(len(parts[0]), node.intercept, dtype=np.float64)
    for c, p in zip(node.coefficients, parts, strict=True):
        q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
        z += c * np.log(q / (1 - q))
    return 1.0 / (1.0 + np.exp(-z))


def _rule_reasons(fired: list[tuple[Reason, np.ndarray]], n: int) -> dict[int, list[Reason]]:
    """Row -> its fired rules, largest weight first (only rows where one fired)."""
    if not fired:
        return {}
    any_hit = np.zeros(n, dtype=bool)
    for _, m in fired:
        any_hit |= m
    out: dict[int, list[Reason]] = {}
    for i in np.flatnonzero(any_hit).tolist():
        got = [r for r, m in fired if m[i]]
        got.sort(key=lambda r: -r.weight)
        out[i] = got[:MAX_REASONS]
    return out
