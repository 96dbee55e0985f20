"""``decision:`` in the pipeline config: thresholds, and the optional decision graph.

The graph is checked twice. Here, when the config is loaded (no model needed): unknown nodes
and versions, cycles, a rules node or a challenger where a score is expected, ensemble
weight counts, rule codes. At start (streaming.decision.stage), once the models and the
pipeline are loaded: record fields, feature names and model input shapes. Every problem
names the node's path in the config, e.g. ``decision.graph.nodes.blend.inputs[1]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from streaming.config_sections import Strict

DECISIONS = ("approve", "review", "decline")
"""Codes 0, 1, 2 in the decide stage's arrays, in this order (a larger code is stricter)."""

Op = Literal[">", ">=", "<", "<=", "==", "!=", "in", "not_in"]
_NAME = r"^[A-Za-z0-9_.-]+$"


class Condition(Strict):
    """One vectorised test over a batch: a record field, a feature, a rule that fired, or
    ``all`` / ``any`` / ``not`` of conditions. Exactly one kind per condition."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str | None = None
    """A field of the pipeline's record (e.g. ``amount``, ``country``, ``card_present``)."""
    feature: str | None = None
    """A column of the feature matrix by name (e.g. ``log_amount_ratio``)."""
    rule: str | None = None
    """True where the rule with this code fired."""
    op: Op | None = None
    value: bool | float | str | tuple[str, ...] | None = None
    value_field: str | None = None
    """Compare with another record field instead of a constant (``country != home_country``)."""
    all_: tuple[Condition, ...] | None = Field(default=None, alias="all")
    any_: tuple[Condition, ...] | None = Field(default=None, alias="any")
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        kinds = [
            k
            for k, v in (
                ("field", self.field),
                ("feature", self.feature),
                ("rule", self.rule),
                ("all", self.all_),
                ("any", self.any_),
                ("not", self.not_),
            )
            if v is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a condition needs exactly one of field, feature, rule, all, any, not "
                f"(got {', '.join(kinds) or 'none'})"
            )
        kind = kinds[0]
        if kind in ("field", "feature"):
            if self.op is None:
                raise ValueError(f"a {kind} condition needs op (one of >, >=, <, <=, ==, !=, in)")
            if (self.value is None) == (self.value_field is None):
                raise ValueError(f"a {kind} condition needs value or value_field (one of them)")
            if self.op in ("in", "not_in") and not isinstance(self.value, tuple):
                raise ValueError(f"op {self.op} needs value: a list, e.g. [NG, BR]")
            if self.op not in ("in", "not_in") and isinstance(self.value, tuple):
                raise ValueError(f"a list value needs op in or not_in, not {self.op}")
        elif self.op is not None or self.value is not None or self.value_field is not None:
            raise ValueError(f"op, value and value_field belong to field or feature, not {kind}")
        if kind in ("all", "any") and not (self.all_ or self.any_):
            raise ValueError(f"{kind} needs at least one condition")
        return self

    def walk(self) -> Iterator[Condition]:
        """This condition and every one inside it."""
        yield self
        for child in (*(self.all_ or ()), *(self.any_ or ()), *((self.not_,) if self.not_ else ())):
            yield from child.walk()


class RuleSpec(Strict):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    """Reason code when it fires (upper case, e.g. ``HIGH_AMOUNT_RISKY_COUNTRY``)."""
    text: str = Field(min_length=1)
    """What an analyst reads in the prediction's reasons."""
    when: Condition
    weight: float = Field(default=1.0, gt=0)
    """The reason's weight: reasons are ordered by it, largest first (with attributions)."""


class RulesNode(Strict):
    """Rule hits per row: reasons in the record, inputs of switches and overrides."""

    type: Literal["rules"]
    rules: tuple[RuleSpec, ...] = Field(min_length=1)


class ModelNode(Strict):
    """A score from one of ``model.versions``."""

    type: Literal["model"]
    version: str = Field(min_length=1)


class ChallengerNode(Strict):
    """Scored and recorded in ``scores``, never deciding: no node may take its score."""

    type: Literal["challenger"]
    version: str = Field(min_length=1)
    when: Condition | None = None
    """Only the rows where it holds (default every row): a heavy challenger on the rows
    that matter costs a fraction of one on all of them."""


class SwitchNode(Strict):
    """``then``'s score where ``when`` holds, ``else``'s elsewhere; each is run only on its
    own rows (a heavy model only for high amounts)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["switch"]
    when: Condition
    then: str
    else_: str = Field(alias="else")


class EnsembleNode(Strict):
    """A weighted mean, the max, or stacking (``sigmoid(intercept + Σ cᵢ·logit(sᵢ))``)."""

    type: Literal["ensemble"]
    method: Literal["mean", "max", "stacking"] = "mean"
    inputs: tuple[str, ...] = Field(min_length=2)
    weights: tuple[float, ...] | None = None
    """mean: one weight per input (default equal); normalised to sum 1."""
    coefficients: tuple[float, ...] | None = None
    """stacking: one coefficient per input, on the inputs' logits."""
    intercept: float = 0.0
    """stacking: added to the weighted logits."""


class Override(Strict):
    rule: str
    """A rule code. Where it fired: ``review`` / ``decline`` raise the decision to at least
    that, ``approve`` approves whatever the score (an allow-list)."""
    decision: Literal["approve", "review", "decline"]


class DecisionNode(Strict):
    """The graph's output: thresholds on its input's score, then rule overrides (on each row
    the first override listed whose rule fired applies)."""

    type: Literal["decision"]
    input: str
    review_threshold: float | None = Field(default=None, ge=0, le=1)
    """Default: ``decision.review_threshold``."""
    decline_threshold: float | None = Field(default=None, ge=0, le=1)
    """Default: ``decision.decline_threshold``."""
    overrides: tuple[Override, ...] = ()


Node = Annotated[
    RulesNode | ModelNode | ChallengerNode | SwitchNode | EnsembleNode | DecisionNode,
    Field(discriminator="type"),
]
SCORE_NODES = (ModelNode, SwitchNode, EnsembleNode)
"""Nodes whose output is a score another node may take."""


class GraphConfig(Strict):
    nodes: dict[str, Node] = Field(min_length=1)
    """Node name -> node; exactly one ``decision`` node, the output."""

    @field_validator("nodes")
    @classmethod
    def _names(cls, value: dict[str, Node]) -> dict[str, Node]:
        import re

        bad = [n for n in value if not re.match(_NAME, n)]
        if bad:
            raise ValueError(f"node names {bad} may hold only letters, digits, _ . -")
        return value

    def rules(self) -> Iterator[tuple[str, int, RuleSpec]]:
        for name, node in self.nodes.items():
            if isinstance(node, RulesNode):
                for i, rule in enumerate(node.rules):
                    yield name, i, rule

    def decision_node(self) -> tuple[str, DecisionNode]:
        return next((n, d) for n, d in self.nodes.items() if isinstance(d, DecisionNode))


class DecisionConfig(Strict):
    """``decision:``: how a score becomes approve, review or decline."""

    review_threshold: float | None = Field(default=None, ge=0, le=1)
    """Scores at or above it (and below decline) are ``review``; default: the decline
    threshold (no review band)."""
    decline_threshold: float | None = Field(default=None, ge=0, le=1)
    """Scores at or above it are ``decline``; default ``model.threshold`` (so ``flagged``
    and ``decline`` agree)."""
    graph: GraphConfig | None = None
    """Rules, models, switches, ensembles, challengers and one decision node."""

    def thresholds(self, model_threshold: float) -> tuple[float, float]:
        """(review, decline) in force outside a graph."""
        decline = model_threshold if self.decline_threshold is None else self.decline_threshold
        review = decline if self.review_threshold is None else self.review_threshold
        return review, decline


def decision_problem(
    decision: DecisionConfig, versions: Sequence[str], model_threshold: float
) -> str | None:
    """The first problem of the decision section, as ``path: what and the fix``, or None."""
    review, decline = decision.thresholds(model_threshold)
    if review > decline:
        return (
            f"decision.review_threshold ({review:g}) is above the decline threshold "
            f"({decline:g}{'' if decision.decline_threshold is not None else ', model.threshold'}"
            "); review must be at or below decline: lower decision.review_threshold or raise "
            "the decline threshold"
        )
    if decision.graph is None:
        return None
    return _graph_problem(decision.graph, versions, (review, decline))


def _graph_problem(
    graph: GraphConfig, versions: Sequence[str], defaults: tuple[float, float]
) -> str | None:
    nodes = graph.nodes
    base = "decision.graph.nodes"
    decisions = [n for n, d in nodes.items() if isinstance(d, DecisionNode)]
    if len(decisions) != 1:
        return (
            f"decision.graph.nodes: needs exactly one node of type decision "
            f"(got {len(decisions)}: {', '.join(decisions) or 'none'})"
        )
    codes: dict[str, str] = {}
    for name, i, rule in graph.rules():
        path = f"{base}.{name}.rules[{i}]"
        if rule.code in codes:
            return f"{path}.code: {rule.code} is also the code of {codes[rule.code]}"
        codes[rule.code] = path
        for cond in rule.when.walk():
            if cond.rule is not None:
                return f"{path}.when: a rule cannot test another rule ({cond.rule})"
    edges: dict[str, list[str]] = {}
    for name, node in nodes.items():
        path = f"{base}.{name}"
        if isinstance(node, ModelNode | ChallengerNode) and node.version not in versions:
            return (
                f"{path}.version: {node.version!r} is not in model.versions ({', '.join(versions)})"
            )
        refs = _score_refs(node)
        for where, ref in refs:
            problem = _ref_problem(nodes, ref)
            if problem:
                return f"{path}.{where}: {problem}"
        edges[name] = [ref for _, ref in refs]
        for cond_path, cond in _conditions(node):
            for c in cond.walk():
                if c.rule is not None and c.rule not in codes:
                    return f"{path}.{cond_path}: no rule has the code {c.rule!r}"
        if isinstance(node, EnsembleNode):
            problem = _ensemble_problem(node)
            if problem:
                return f"{path}.{problem}"
        if isinstance(node, DecisionNode):
            for i, o in enumerate(node.overrides):
                if o.rule not in codes:
                    return f"{path}.overrides[{i}].rule: no rule has the code {o.rule!r}"
            review = defaults[0] if node.review_threshold is None else node.review_threshold
            decline = defaults[1] if node.decline_threshold is None else node.decline_threshold
            if review > decline:
                return (
                    f"{path}: review_threshold ({review:g}) is above decline_threshold "
                    f"({decline:g})"
                )
    cycle = _find_cycle(edges)
    if cycle:
        return f"{base}.{cycle[0]}: cycle {' -> '.join(cycle)}"
    used = _reachable(edges, decisions[0])
    for name, node in nodes.items():
        if isinstance(node, SCORE_NODES) and name not in used:
            return (
                f"{base}.{name}: not used by the decision node {decisions[0]!r} "
                "(take it as an input, make it a challenger, or remove it)"
            )
    return None


def _score_refs(node: Node) -> list[tuple[str, str]]:
    """(field path, node name) of each score the node takes."""
    if isinstance(node, SwitchNode):
        return [("then", node.then), ("else", node.else_)]
    if isinstance(node, EnsembleNode):
        return [(f"inputs[{i}]", ref) for i, ref in enumerate(node.inputs)]
    if isinstance(node, DecisionNode):
        return [("input", node.input)]
    return []


def _conditions(node: Node) -> list[tuple[str, Condition]]:
    if isinstance(node, SwitchNode) or (isinstance(node, ChallengerNode) and node.when):
        return [("when", node.when)]  # type: ignore[list-item]
    return []


def _ref_problem(nodes: dict[str, Node], ref: str) -> str | None:
    target = nodes.get(ref)
    if target is None:
        return f"unknown node {ref!r} (nodes: {', '.join(nodes)})"
    if isinstance(target, RulesNode):
        return f"{ref!r} is a rules node: its output is rule hits, not a score"
    if isinstance(target, ChallengerNode):
        return f"{ref!r} is a challenger: its score is recorded, never used for a decision"
    if isinstance(target, DecisionNode):
        return f"{ref!r} is the decision node: it gives decisions, not a score"
    return None


def _ensemble_problem(node: EnsembleNode) -> str | None:
    n = len(node.inputs)
    if node.method == "stacking":
        if node.coefficients is None or len(node.coefficients) != n:
            got = "none" if node.coefficients is None else len(node.coefficients)
            return f"coefficients: stacking needs one per input ({n}), got {got}"
        if node.weights is not None:
            return "weights: belong to method mean; stacking uses coefficients"
        return None
    if node.coefficients is not None:
        return f"coefficients: belong to method stacking, not {node.method}"
    if node.weights is not None:
        if node.method != "mean":
            return f"weights: belong to method mean, not {node.method}"
        if len(node.weights) != n:
            return f"weights: one per input ({n}), got {len(node.weights)}"
        if min(node.weights) < 0 or sum(node.weights) <= 0:
            return "weights: must be >= 0 with a positive sum"
    return None


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle as [a, b, ..., a] (depth-first, in config order), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in edges.get(n, ()):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in edges:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _reachable(edges: dict[str, list[str]], start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for m in edges.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen
