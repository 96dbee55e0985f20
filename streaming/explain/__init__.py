"""Per-batch explanations: attributions in logit space and the reason codes they add up to.

Generic: a model version's artifacts and a pipeline's feature -> code mapping, nothing about
any one pipeline. torch is imported only by streaming.explain.gradients, and only when a model
needs gradients (see streaming.explain.factory).

    explainer = make_explainer(version_dir, metadata)        # at start; fails with the fix
    explainer = explainer_for(cfg.reasons, version_dir, metadata)  # the same, config's method
    attr = explainer.attributions(features[rows_to_explain])  # (n, d) float64
    reasons = ReasonCodes.from_config(cfg, feature_names).top(attr, k=4)

Threads: explainers and ReasonCodes hold no mutable state once built (arrays read, never
written), so any thread may call them, several at once. Building one (make_explainer) loads
torch and the model: do it at start, not on the hot path.
"""

from streaming.explain.factory import explainer_for, make_explainer
from streaming.explain.reasons import ReasonCodes
from streaming.explain.types import METHODS, Explainer, ExplainError, Reason

__all__ = [
    "METHODS",
    "ExplainError",
    "Explainer",
    "Reason",
    "ReasonCodes",
    "explainer_for",
    "make_explainer",
]
