"""Bytes -> validated records, or a dead letter that says which stage refused the event and why."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from streaming.engine.types import STAGE_DECODE, STAGE_VALIDATE, Rejection, SourceMessage
from streaming.formats.fast_json import compile_json_batch

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
        self._fast = compile_json_batch(schema)
        """msgspec's reading of a batch (streaming.formats.fast_json), or None: the events it
        is not certain of, and every event of a schema it cannot read, go to pydantic."""

    @property
    def fast(self) -> bool:
        """Whether valid events are read by msgspec (the schema has plain checks only)."""
        return self._fast is not None

    def decode(
        self, messages: Sequence[SourceMessage]
    ) -> tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]:
        """Return (indexes of valid messages, their records, (index, rejection) of the rest)."""
        if self._fast is None:
            return self._each(messages, range(len(messages)))
        return with_the_rest(self._fast(messages, self._max), messages, self._each)

    def _each(
        self, messages: Sequence[SourceMessage], indexes: Iterable[int]
    ) -> tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]:
        """The messages at ``indexes`` validated by pydantic one at a time: what ``decode``
        returns."""
        validate, limit = self._validate, self._max
        good_idx: list[int] = []
        records: list[BaseModel] = []
        bad: list[tuple[int, Rejection]] = []
        for i in indexes:
            value = messages[i].value()
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


Decoded = tuple[list[int], list[BaseModel], list[tuple[int, Rejection]]]
"""(indexes of valid messages, their records, (index, rejection) of the rest)."""


def with_the_rest(
    read: tuple[list[int], list[BaseModel], list[int]],
    messages: Sequence[SourceMessage],
    each: Callable[[Sequence[SourceMessage], list[int]], Decoded],
) -> Decoded:
    """A fast reader's (indexes, records, rest) completed by ``each``, the slow way, for the
    messages it left: the records of both in index order."""
    idx, records, rest = read
    if not rest:
        return idx, records, []
    more_idx, more, bad = each(messages, rest)
    if not more_idx:
        return idx, records, bad
    # two ascending runs: the sort merges them in one pass
    merged = sorted(zip(idx + more_idx, records + more, strict=True), key=_first)
    return [i for i, _ in merged], [r for _, r in merged], bad


def _first(pair: tuple[int, BaseModel]) -> int:
    return pair[0]
