"""The decide stage as the engine uses it: built at start (with the start-up checks that need
the loaded models and the pipeline), then called by the inference thread once per batch.

With a graph, every row goes to the first listed version's lane (the carrier), and its
inference thread runs the whole graph, calling the versions its nodes name directly: the graph
needs all of a row's scores at once, so a lane and a thread per node would only add hand-offs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from streaming.decision.conditions import Columns, fields_needed
from streaming.decision.config import ChallengerNode, ModelNode, RulesNode, SwitchNode
from streaming.decision.decide import Decided, threshold_codes
from streaming.decision.graph import DecisionGraph, NodeError
from streaming.decision.reasons import Explanations, make_explanations
from streaming.errors import StartupError

if TYPE_CHECKING:
    from streaming.config import PipelineConfig
    from streaming.engine.versions import ModelVersion
    from streaming.pipeline import PipelineSpec


class DecideStage:
    """Scores -> decisions for one engine; ``score`` runs on an inference thread and keeps no
    state between calls (so the threads of several versions may share it)."""

    def __init__(
        self,
        thresholds: tuple[float, float],
        graph: DecisionGraph | None = None,
        explanations: Mapping[str, Explanations] | None = None,
        fields: Sequence[str] = (),
    ) -> None:
        self.graph = graph
        self.review, self.decline = (graph.review, graph.decline) if graph else thresholds
        self.explanations: Mapping[str, Explanations] = dict(explanations or {})
        """Per version name: each version is explained with its own model's attributions
        (with a graph, the carrier only: it scores every row)."""
        self.fields = tuple(fields)
        """Record fields the feeding thread puts in each chunk's columns (none: no columns)."""

    def explanations_for(self, version: str) -> Explanations | None:
        return self.explanations.get(version)

    def score(
        self, version: ModelVersion, features: np.ndarray, columns: Columns | None
    ) -> Decided:
        """The batch's scores and decisions (a model error propagates to the caller)."""
        if self.graph is not None:
            return self.graph.run(features, columns)
        scores = version.runtime.predict(features)
        return Decided(scores, threshold_codes(scores, self.review, self.decline))


def build_decide_stage(
    cfg: PipelineConfig, versions: Sequence[ModelVersion], pipeline: PipelineSpec
) -> DecideStage:
    """The engine's decide stage; the graph's start-up checks raise StartupError with the
    node's path (fields, features, model input shapes, a trial run on generated events)."""
    thresholds = cfg.decision.thresholds(cfg.model.threshold)
    graph_cfg = cfg.decision.graph
    if graph_cfg is None:
        explained = {v.name: make_explanations(cfg, v) for v in versions}
        return DecideStage(
            thresholds, explanations={k: e for k, e in explained.items() if e is not None}
        )
    carrier = versions[0]
    by_name = {v.name: v for v in versions}
    feature_names = tuple(carrier.preprocessor.feature_names)
    schema_fields = set(pipeline.schema.model_fields)
    fields: set[str] = set()
    for name, node in graph_cfg.nodes.items():
        path = f"decision.graph.nodes.{name}"
        conds = []
        if isinstance(node, RulesNode):
            conds = [(f"{path}.rules[{i}].when", r.when) for i, r in enumerate(node.rules)]
        elif isinstance(node, SwitchNode) or (isinstance(node, ChallengerNode) and node.when):
            conds = [(f"{path}.when", node.when)]
        for cpath, cond in conds:
            for c in cond.walk():
                for f in (c.field, c.value_field):
                    if f is not None and f not in schema_fields:
                        raise StartupError(
                            f"{cpath}: {f!r} is not a field of {pipeline.schema.__name__} "
                            f"({', '.join(sorted(schema_fields))})"
                        )
                if c.feature is not None and c.feature not in feature_names:
                    raise StartupError(
                        f"{cpath}: {c.feature!r} is not a feature of the model's input "
                        f"({', '.join(feature_names)})"
                    )
            fields |= fields_needed(cond)
        if isinstance(node, ModelNode | ChallengerNode):
            meta = by_name[node.version].runtime.metadata
            if tuple(meta.feature_names) != feature_names or (
                meta.preprocessing != carrier.runtime.metadata.preprocessing
            ):
                raise StartupError(
                    f"{path}.version: {node.version} takes {meta.input_dim} inputs "
                    f"({', '.join(meta.feature_names[:3])}…) preprocessed its own way, but "
                    f"the graph's rows are preprocessed for {carrier.name} "
                    f"({len(feature_names)} inputs); every version in a graph needs the "
                    "same features: rebuild them together (make models)"
                )
    graph = DecisionGraph(
        graph_cfg,
        {v.name: v.runtime.predict for v in versions},
        feature_names,
        thresholds,
    )
    stage = DecideStage(
        thresholds,
        graph,
        _explained(carrier.name, make_explanations(cfg, carrier)),
        sorted(fields),
    )
    _trial_run(stage, carrier, pipeline)
    return stage


def _explained(name: str, found: Explanations | None) -> dict[str, Explanations]:
    return {} if found is None else {name: found}


def _trial_run(stage: DecideStage, carrier: ModelVersion, pipeline: PipelineSpec) -> None:
    """A few generated events through the graph, so that a rule comparing text with a number
    fails at start, not on the first live batch."""
    from streaming.decision.columns import make_columns

    events = pipeline.make_generator(0).batch(8, 1_700_000_000_000)
    records: list[Any] = []
    for e in events:
        try:
            records.append(pipeline.schema.model_validate_json(e.value))
        except ValueError:
            continue
    if not records:
        return
    if pipeline.state is None:
        features = carrier.preprocessor.transform(records)
    else:  # the pipeline's per-key features, as the state stage computes them
        from streaming.state import history_features

        keys = [e.key for e in events[: len(records)]]
        features = carrier.preprocessor.transform(
            records, history_features(pipeline.state, keys, records)
        )
    try:
        stage.score(carrier, features, make_columns(records, stage.fields))
    except NodeError as exc:
        raise StartupError(f"{exc} (in a trial run on generated events)") from None
