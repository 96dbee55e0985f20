"""Reasons on a prediction: the rules that fired, and the model's attributions.

At most ``MAX_REASONS`` per prediction, largest weight first. Attributions come from the
explain package (streaming.explain) through one factory, :func:`make_explanations`, which
returns None when the pipeline declares no reason codes; what is used of it:

    explainer.attributions(features (n, d) float32) -> (n, d) logit-space attributions
    reason_codes.top(attributions (n, d), k=4) -> list[list[Reason]]  (.code .text .weight)

Only rows at or above the review threshold are explained. How explaining keeps both
promises (see :func:`held_rows`): the rows of a batch that need no explanation are published
first, before the explainer runs, so they never wait for it; a row that needs one holds back
every later row of the same key, in its batch and in the batches scored while it waits
(streaming.engine.explain_backlog), and those are published after it, in input order, so
predictions for one key stay in input order.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from streaming.errors import StartupError
from streaming.explain.types import Explainer

if TYPE_CHECKING:
    from streaming.config import PipelineConfig
    from streaming.engine.versions import ModelVersion
    from streaming.explain.reasons import ReasonCodes

log = logging.getLogger("streaming.worker")

MAX_REASONS = 4


class ReasonLike(Protocol):
    code: str
    text: str
    weight: float


@dataclass(frozen=True, slots=True)
class Explanations:
    """A model's explainer and the pipeline's feature -> reason code mapping."""

    explainer: Explainer
    reason_codes: ReasonCodes
    in_batch: bool = False
    """Rows are explained in their own batch (``reasons.when``), not held for a later call."""

    def reasons(self, features: np.ndarray) -> list[list[Any]]:
        """Reasons for each row of ``features`` (the rows to explain only)."""
        if features.shape[0] == 0:
            return []
        return self.reason_codes.top(self.explainer.attributions(features), MAX_REASONS)


def make_explanations(cfg: PipelineConfig, version: ModelVersion) -> Explanations | None:
    """The attributions of ``version``'s model and the pipeline's reason codes, or None when
    the pipeline declares no ``reasons``. Built at start: a model without what explaining
    needs, or a code naming no feature of it, fails here with the fix (exit 2)."""
    if cfg.reasons is None:
        return None
    if "explain" not in version.runtime.metadata.raw:
        # exported without explanation support (e.g. by models.fraud.faulty): served with
        # rule reasons only, said once at start, rather than refused
        log.warning(
            "reasons: %s/%s has no explain entry in its metadata, so its predictions carry "
            "rule reasons only; rebuild it (make models) to explain it",
            cfg.model.name,
            version.name,
        )
        return None
    from streaming.config import ConfigError
    from streaming.explain import ExplainError, ReasonCodes, explainer_for

    where = f"reasons ({cfg.model.name}/{version.name})"
    try:
        explainer = explainer_for(
            cfg.reasons, cfg.version_dir(version.config), version.runtime.metadata.raw
        )
        codes = ReasonCodes.from_config(cfg.reasons, version.preprocessor.feature_names)
    except (ExplainError, ConfigError) as exc:
        raise StartupError(f"{where}: {exc}") from None
    when = cfg.reasons.when
    cheap = bool(getattr(explainer, "cheap", False))
    return Explanations(explainer, codes, when == "in-batch" or (when == "auto" and cheap))


def merge(rules: Sequence[ReasonLike], explained: Sequence[ReasonLike]) -> list[ReasonLike]:
    """Fired rules and attribution reasons, largest weight first, at most MAX_REASONS (a
    code given by both keeps its larger weight once)."""
    best: dict[str, ReasonLike] = {}
    for r in (*rules, *explained):
        kept = best.get(r.code)
        if kept is None or r.weight > kept.weight:
            best[r.code] = r
    return sorted(best.values(), key=lambda r: -r.weight)[:MAX_REASONS]


def held_rows(
    keys: Sequence[bytes | None], explain: np.ndarray, waiting: Collection[bytes | None] = ()
) -> np.ndarray:
    """Rows published after the explainer: those to explain, and every later row of the
    same key, or of a key in ``waiting`` (held from earlier batches), so a key's predictions
    stay in input order. The rest go out first."""
    held = explain.copy()
    if waiting:
        first = 0
    elif not held.any():
        return held
    else:
        first = int(np.argmax(held))  # rows before the first explained one are never held
    flags = held[first:].tolist()
    pending: set[bytes | None] = set(waiting)
    for i, key in enumerate(keys[first:]):
        if flags[i]:
            pending.add(key)
        elif key in pending:
            flags[i] = True
    held[first:] = flags
    return held


_EMPTY = "[]"
_quote = json.encoder.encode_basestring  # type: ignore[attr-defined]
"""A str as JSON, exactly as json.dumps(ensure_ascii=False) writes it."""


def reasons_json(reasons: Sequence[ReasonLike]) -> str:
    """The ``reasons`` field's JSON (``[]`` when none): what ``json.dumps`` of
    ``[{"code", "text", "weight": round(weight, 6)}]`` with compact separators writes, built
    from each code's JSON prefix (made once) and the weight's ``repr``: json.dumps cost about
    10-35 us an explained row here, a tenth of what explaining it costs."""
    if not reasons:
        return _EMPTY
    parts = []
    for r in reasons:
        weight = round(float(r.weight), 6)
        if not math.isfinite(weight):  # json.dumps writes these as NaN / Infinity
            return json.dumps(
                [
                    {"code": x.code, "text": x.text, "weight": round(float(x.weight), 6)}
                    for x in reasons
                ],
                ensure_ascii=False,
                separators=(",", ":"),
            )
        parts.append(f"{_reason_head(r.code, r.text)}{weight!r}}}")
    return f"[{','.join(parts)}]"


@functools.lru_cache(maxsize=1024)
def _reason_head(code: str, text: str) -> str:
    return f'{{"code":{_quote(code)},"text":{_quote(text)},"weight":'
