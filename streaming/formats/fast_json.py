"""A fast first reading of JSON events: msgspec parses and checks them against the schema's own
constraints in C, and the pipeline's model is built from what it read, a poll batch per call
(streaming/formats/_json_flat.c).

pydantic's ``validate_json`` was about half of the feeding thread's time while a worker
drained (2.7 us of the fraud event in a tight loop, more in the worker). msgspec reads the same
event into a typed struct, with the same length, bound and literal checks, in 0.65 us; the C
loop builds the model from it as pydantic-core builds it, about 2.0 us in all. Building the
model in Python instead would cost as much as it saves, so without the C loop there is no
fast reading.

The struct is derived from what streaming.formats.model_checks understands of the model's core
schema (str lengths, int and float bounds, finiteness, str Literals, bools, extra fields
forbidden or ignored). A model whose validation is anything more (a validator, a default, an
alias, a pattern, a nested model, a coercing option) gets no reader here and is validated by
pydantic alone. A reading is never a verdict either: a value the reader is not certain of
(msgspec refuses it, or it holds a backslash escape) is left to the caller, which validates
it with pydantic, which gives the record or the dead letter it always gave. So the reader
decides how fast a valid event is built, never what any event becomes;
tests/unit/test_fast_json.py holds every record it builds to pydantic's, on random, damaged
and hostile values.

Pure functions, no state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel

from streaming.formats.model_checks import FieldCheck, builder_plan, field_checks

try:
    from streaming.formats import _json_flat as C_JSON
except ImportError:  # built without a C compiler: pydantic validates every event
    C_JSON = None  # type: ignore[assignment]

BatchReader = Callable[[Sequence[Any], int], tuple[list[int], list[BaseModel], list[int]]]
"""``read(messages, limit) -> (indexes, records, rest)``: the records read of the messages at
``indexes``; the messages at ``rest`` are the caller's to validate (both ascending)."""

_MAX = sys.float_info.max


def compile_json_batch(model: type[BaseModel]) -> BatchReader | None:
    """A batch reader for ``model``, or None when its validation is more than plain field
    checks or the C loop is not built (pydantic alone is as fast as msgspec and a model built
    in Python)."""
    checks = field_checks(model)
    if checks is None or C_JSON is None:
        return None
    extra = model.__pydantic_core_schema__.get("config", {}).get("extra_fields_behavior")
    struct = msgspec.defstruct(
        f"{model.__name__}Json",
        [(name, _msgspec_type(check)) for name, check in checks.items()],
        forbid_unknown_fields=extra == "forbid",
        gc=False,
    )
    decode = msgspec.json.Decoder(struct).decode
    plan = builder_plan(model, list(range(len(checks))))
    return partial(C_JSON.read_batch, decode, plan)


def _msgspec_type(check: FieldCheck) -> Any:
    """The msgspec type that accepts exactly the JSON values pydantic accepts unchanged (or
    fewer: what it refuses goes to pydantic)."""
    if check.kind == "literal":
        return Literal[check.choices]  # type: ignore[valid-type]
    if check.kind == "bool":
        return bool
    base: type = {"str": str, "int": int, "float": float}[check.kind]
    if check.bounds is None:
        return base
    by_length, lo, lo_strict, hi, hi_strict, finite = check.bounds
    if by_length:
        return Annotated[base, msgspec.Meta(min_length=lo, max_length=hi)]
    if finite:  # JSON's 1e400 is inf to both parsers: a bound on each side refuses it
        lo, lo_strict = (-_MAX, False) if lo is None else (lo, lo_strict)
        hi, hi_strict = (_MAX, False) if hi is None else (hi, hi_strict)
    meta: dict[str, Any] = {}
    if lo is not None:
        meta["gt" if lo_strict else "ge"] = lo
    if hi is not None:
        meta["lt" if hi_strict else "le"] = hi
    return Annotated[base, msgspec.Meta(**meta)]
