"""The records the worker writes: predictions, dead-letter headers, telemetry (README, Topics)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from streaming.decision.reasons import ReasonLike, reasons_json
from streaming.engine.types import Headers, Rejection

DLQ_STAGE = "dead_letter.stage"
DLQ_REASON = "dead_letter.reason"
DLQ_REASON_CLASS = "dead_letter.reason_class"
DLQ_TOPIC = "dead_letter.topic"
DLQ_PARTITION = "dead_letter.partition"
DLQ_OFFSET = "dead_letter.offset"
DLQ_WORKER = "dead_letter.worker"
DLQ_VERSION = "dead_letter.version"

try:
    from streaming.engine import _encode as C_ENCODE
except ImportError:  # built without a C compiler: the f-strings below, the same bytes
    C_ENCODE = None  # type: ignore[assignment]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_quote = json.encoder.encode_basestring  # type: ignore[attr-defined]
"""A str as JSON, exactly as ``_dumps`` writes it (ensure_ascii=False)."""


def dead_letter_headers(
    original: Headers | None,
    rejection: Rejection,
    topic: str,
    partition: int,
    offset: int,
    worker: str,
) -> Headers:
    """The original headers (trace context included) plus where and why the event failed."""
    headers = list(original) if original else []
    headers += [
        (DLQ_STAGE, rejection.stage.encode()),
        (DLQ_REASON, rejection.reason.encode("utf-8", "replace")),
        (DLQ_REASON_CLASS, rejection.reason_class.encode()),
        (DLQ_TOPIC, topic.encode()),
        (DLQ_PARTITION, str(partition).encode()),
        (DLQ_OFFSET, str(offset).encode()),
        (DLQ_WORKER, worker.encode()),
    ]
    if rejection.version is not None:
        headers.append((DLQ_VERSION, rejection.version.encode()))
    return headers


def encode_predictions(
    event_ids: Sequence[str],
    ts_ms: Sequence[int],
    scores: np.ndarray,
    *,
    model: str,
    version: str,
    threshold: float,
    scored_ms: int,
    worker: str,
    decisions: np.ndarray | None = None,
    reasons: Mapping[int, Sequence[ReasonLike]] | None = None,
    node_scores: Mapping[str, np.ndarray] | None = None,
    native: bool = True,
) -> list[bytes]:
    """One JSON prediction per row. Built by hand: json.dumps per row costs twice as much.

    ``decisions``: codes 0/1/2 (default: decline at ``threshold``, no review band);
    ``reasons``: row -> its reasons (rows absent have none); ``node_scores``: per graph node,
    NaN where the node did not score the row (the key is then left out).

    Where the C extension is built (``C_ENCODE``, streaming/engine/_encode.c) it writes the
    same bytes as the f-strings below, which stay as the fallback and the reference."""
    tail = f',"scored_ms":{scored_ms},{_names(model, version, worker)}}}'
    # what _dumps does with a str, without its Python-level dispatch (a fifth of this loop)
    quote = _quote
    if decisions is None:
        decisions = (scores >= threshold).astype(np.int8) * 2
    if C_ENCODE is not None and native:
        done = _encode_native(
            event_ids, ts_ms, scores, decisions, threshold, reasons, node_scores, tail
        )
        if done is not None:
            return done
    words = _DECISION_JSON
    out = []
    rows = zip(event_ids, ts_ms, scores.tolist(), decisions.tolist(), strict=True)
    if not reasons and not node_scores:  # no graph, no rule fired: the hot path
        for event_id, ts, score, code in rows:
            flagged = "true" if score >= threshold else "false"
            out.append(
                f'{{"event_id":{quote(event_id)},"score":{score:.6g},"flagged":{flagged},'
                f'"ts_ms":{ts},"decision":{words[code]},"reasons":[]{tail}'.encode()
            )
        return out
    why = [_EMPTY_REASONS] * len(event_ids)
    for i, given in (reasons or {}).items():
        why[i] = f'"reasons":{reasons_json(given)}'
    more = _node_scores(node_scores, len(event_ids)) if node_scores else [""] * len(event_ids)
    for (event_id, ts, score, code), w, m in zip(rows, why, more, strict=True):
        flagged = "true" if score >= threshold else "false"
        out.append(
            f'{{"event_id":{quote(event_id)},"score":{score:.6g},"flagged":{flagged},'
            f'"ts_ms":{ts},"decision":{words[code]},{w}{m}{tail}'.encode()
        )
    return out


def _encode_native(
    event_ids: Sequence[str],
    ts_ms: Sequence[int],
    scores: np.ndarray,
    decisions: np.ndarray,
    threshold: float,
    reasons: Mapping[int, Sequence[ReasonLike]] | None,
    node_scores: Mapping[str, np.ndarray] | None,
    tail: str,
) -> list[bytes] | None:
    """The C encoder's call (its arguments as it takes them), or None where it declines."""
    codes = np.asarray(decisions)
    if codes.dtype.kind not in "iu" or len(codes) != len(event_ids):
        return None
    n = len(event_ids)
    why: list[str | None] | None = None
    if reasons:
        why = [None] * n
        for i, given in reasons.items():
            why[i] = reasons_json(given)
    keys = matrix = None
    if node_scores:
        keys = tuple(f'"{name}":' for name in node_scores)
        matrix = np.ascontiguousarray(np.vstack(list(node_scores.values())), dtype=np.float64)
    return C_ENCODE.predictions(
        event_ids if type(event_ids) is list else list(event_ids),
        ts_ms if type(ts_ms) is list else list(ts_ms),
        np.ascontiguousarray(scores, dtype=np.float64),
        # int8 as the C reads it; a wider code outside -1..3 stays out of range (the Python's)
        np.ascontiguousarray(codes if codes.dtype == np.int8 else codes.clip(-1, 3), np.int8),
        float(threshold),
        why,
        keys,
        matrix,
        tail,
        _quote,
    )


_DECISION_JSON = ('"approve"', '"review"', '"decline"')
_EMPTY_REASONS = '"reasons":[]'


def _node_scores(node_scores: Mapping[str, np.ndarray], n: int) -> list[str]:
    """``,"scores":{...}`` per row: one format call a row, from a template per pattern of
    nodes that scored it (node names are plain: the config allows [A-Za-z0-9_.-])."""
    names = list(node_scores)
    present = np.zeros(n, dtype=np.int64)
    for j, v in enumerate(node_scores.values()):
        present |= (~np.isnan(v)).astype(np.int64) << j
    templates: dict[int, Callable[..., str]] = {}
    out = []
    rows = zip(*(v.tolist() for v in node_scores.values()), strict=True)
    for p, row in zip(present.tolist(), rows, strict=True):
        t = templates.get(p)
        if t is None:
            keys = ",".join(f'"{nm}":{{{j}:.6g}}' for j, nm in enumerate(names) if p >> j & 1)
            t = templates[p] = (',"scores":{{' + keys + "}}").format
        out.append(t(*row))
    return out


@functools.lru_cache(maxsize=64)
def _names(model: str, version: str, worker: str) -> str:
    """The fields every prediction of a version repeats (JSON-encoded once, not per chunk)."""
    return _dumps({"model": model, "version": version, "worker": worker})[1:-1]


def encode_json(record: dict) -> bytes:
    return _dumps(record).encode()
