"""Bytes -> validated records, or a dead letter that says which stage refused the event and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from streaming.engine.types import STAGE_DECODE, STAGE_VALIDATE, Rejection, SourceMessage

_MAX_REASON = 480
_MAX_INPUT_REPR = 40


def too_large(size: int, limit: int) -> Rejection:
    return Rejection(
        STAGE_DECODE,
        f"value of {size} bytes exceeds pipeline.max_event_bytes ({limit})",
        "too_large",
    )


def explain_validation_error(exc: ValidationError) -> Rejection:
    """Name the stage (bad JSON is ``decode``, a schema mismatch ``validate``) and the fields."""
    errors = exc.errors(include_url=False)
    first = errors[0]["type"] if errors else "invalid"
    if first == "json_invalid":
        return Rejection(STAGE_DECODE, clip_reason(errors[0]["msg"]), "json_invalid")
    parts = []
    for err in errors[:5]:
        path = ".".join(str(p) for p in err["loc"]) or "event"
        shown = "" if err["type"] in ("missing", "model_type") else f" (got {_short(err['input'])})"
        parts.append(f"{path}: {err['msg']}{shown}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return Rejection(STAGE_VALIDATE, clip_reason("; ".join(parts)), first)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_INPUT_REPR else text[: _MAX_INPUT_REPR - 1] + "…"


def clip_reason(text: str) -> str:
    """A reason cut to what a dead-letter header carries."""
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


class Decoder:
    """Validates raw values against the pipeline's schema, a poll batch at a time."""

    def __init__(self, schema: type[BaseModel], max_event_bytes: int) -> None:
        # The same validation as schema.model_validate_json, minus its Python-level wrapper
        # (a fifth of the decode cost per event).
        self._validate = schema.__pydantic_validator__.validate_json
        self._max = max_event_bytes

    def decode(
        self, messages: Sequence[SourceMessage]
    ) -> tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]:
        """Return (indexes of valid messages, their records, (index, rejection) of the rest)."""
        validate, limit = self._validate, self._max
        good_idx: list[int] = []
        records: list[BaseModel] = []
        bad: list[tuple[int, Rejection]] = []
        for i, msg in enumerate(messages):
            value = msg.value()
            if value is None:
                bad.append((i, Rejection(STAGE_DECODE, "no value (tombstone)", "empty")))
                continue
            if len(value) > limit:
                bad.append((i, too_large(len(value), limit)))
                continue
            try:
                records.append(validate(value))
            except ValidationError as exc:
                bad.append((i, explain_validation_error(exc)))
                continue
            except (ValueError, RecursionError) as exc:  # defensive: parser limits
                bad.append(
                    (i, Rejection(STAGE_DECODE, clip_reason(f"unparseable: {exc}"), "unparseable"))
                )
                continue
            good_idx.append(i)
        return good_idx, records, bad
