"""A flat pydantic model's validation as Python tests, for readers that build records directly.

pydantic's ``validate_python`` of a dict read from Avro costs as much as pydantic's whole
parse-and-validate of the same event's JSON (2.2 us of the fraud event's 4.6). A reader
compiled for one writer schema (streaming.formats.avro_compiled) already knows each value's
Python type, so for the plain constraints of a flat model (str lengths, int and float bounds,
finiteness, str Literals, bools) a test in the generated code says whether pydantic would
accept the value unchanged; when every test passes, the record is built as pydantic-core
builds it (the tests and the building together about half the cost of the validation).

Only what this module understands from the model's core schema is compiled: any validator,
default, alias, pattern, coercing option, config key or field type it does not know makes
``field_checks`` answer None, and that model is validated by pydantic as before. A test that
fails is never an answer either: the value then goes to pydantic, which gives the record or
the dead letter it always gave. So the checks decide how fast a valid event is built, never
what any event becomes.

Pure functions, no state.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from pydantic import BaseModel

_MODEL_KEYS = {"type", "cls", "schema", "config", "custom_init", "root_model", "metadata", "ref"}
_FIELDS_KEYS = {"type", "fields", "model_name", "computed_fields", "metadata"}
_CONFIG_KEYS = {"title", "cache_strings", "extra_fields_behavior"}
_FIELD_KEYS = {"type", "schema", "metadata"}
_KIND_KEYS = {
    "str": {"type", "min_length", "max_length", "strict", "metadata"},
    "int": {"type", "gt", "ge", "lt", "le", "strict", "metadata"},
    "float": {"type", "gt", "ge", "lt", "le", "strict", "allow_inf_nan", "metadata"},
    "bool": {"type", "strict", "metadata"},
    "literal": {"type", "expected", "metadata"},
}
_SLOTS = ("__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")


class FieldCheck(NamedTuple):
    """What pydantic accepts unchanged for one field, given a value of type ``kind``."""

    kind: str
    """``str``, ``int``, ``float``, ``bool`` or ``literal`` (of strs): the exact Python type
    the reader must give (a literal's value is a str)."""
    test: str
    """A Python expression over ``{v}`` (replaced by the value's variable), true only when
    pydantic accepts the value as it is ('' when every value of the type is accepted)."""
    choices: tuple[str, ...] = ()
    """A literal's allowed strings."""
    bounds: tuple[bool, Any, bool, Any, bool, bool] | None = None
    """The same test as data, for the C reader: (by_length, lo, lo_strict, hi, hi_strict,
    finite), lo and hi None when unbounded; None when every value passes."""


def field_checks(model: type[BaseModel]) -> dict[str, FieldCheck] | None:
    """Field name -> its check, in the model's field order, or None when the model's
    validation is anything more than these checks (then pydantic validates as before)."""
    if not _plain_model(model):
        return None
    core: dict[str, Any] = model.__pydantic_core_schema__  # type: ignore[assignment]
    fields = core["schema"]["fields"]
    out: dict[str, FieldCheck] = {}
    for name, field in fields.items():
        if not isinstance(field, dict) or set(field) - _FIELD_KEYS:
            return None
        if field.get("type") != "model-field":
            return None
        check = _check(field.get("schema"))
        if check is None:
            return None
        out[name] = check
    return out if out and list(out) == list(model.model_fields) else None


def builder_scope(model: type[BaseModel]) -> dict[str, Any]:
    """Names a generated constructor uses: ``_new``, the four slot setters and ``_names``.

    pydantic-core sets exactly these four on the instances it validates (the field values in
    field order, the names of the fields given, no extras, no private attributes)."""
    setters = [getattr(BaseModel.__dict__[slot], "__set__") for slot in _SLOTS]  # noqa: B009
    return {
        "_cls": model,
        "_new": object.__new__,
        "_set_dict": setters[0],
        "_set_fields": setters[1],
        "_set_extra": setters[2],
        "_set_private": setters[3],
        "_names": set(model.model_fields),
    }


def builder_plan(model: type[BaseModel], order: list[int]) -> tuple[Any, ...]:
    """What the C reader's ``read_model`` builds the model with (streaming/formats/
    _avro_flat.c): the class, the field names in the model's order, each one's place among
    the values read (``order``), their frozenset, ``object.__new__`` and the four slot
    descriptors pydantic-core sets, as ``builder_scope`` gives them to generated Python."""
    names = tuple(model.model_fields)
    slots = tuple(BaseModel.__dict__[slot] for slot in _SLOTS)
    return (model, names, tuple(order), frozenset(names), object.__new__, *slots)


def builder_lines(names: list[str], values: list[str]) -> list[str]:
    """Lines that return the model built from the variables ``values`` (in field order)."""
    record = ", ".join(f"{name!r}: {value}" for name, value in zip(names, values, strict=True))
    return [
        "m = _new(_cls)",
        f"_set_dict(m, {{{record}}})",
        "_set_fields(m, _names.copy())",
        "_set_extra(m, None)",
        "_set_private(m, None)",
        "return m",
    ]


def _plain_model(model: type[BaseModel]) -> bool:
    """A model whose validation is its fields' alone: no model validators, custom init,
    post-init, private attributes, extras kept, root model or config that coerces."""
    core = getattr(model, "__pydantic_core_schema__", None)
    if not isinstance(core, dict) or set(core) - _MODEL_KEYS:
        return False
    if core.get("type") != "model" or core.get("cls") is not model:
        return False
    if core.get("custom_init") or core.get("root_model"):
        return False
    config = core.get("config", {})
    if set(config) - _CONFIG_KEYS:
        return False
    if config.get("extra_fields_behavior", "ignore") not in ("ignore", "forbid"):
        return False
    inner = core.get("schema")
    if not isinstance(inner, dict) or set(inner) - _FIELDS_KEYS:
        return False
    if inner.get("type") != "model-fields" or inner.get("computed_fields"):
        return False
    if model.__pydantic_post_init__ is not None or model.__private_attributes__:
        return False
    return all(slot in BaseModel.__dict__ for slot in _SLOTS)


def _check(schema: Any) -> FieldCheck | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if kind not in _KIND_KEYS or set(schema) - _KIND_KEYS[kind]:
        return None
    if kind == "str":
        lo, hi = schema.get("min_length"), schema.get("max_length")
        if not all(b is None or type(b) is int for b in (lo, hi)):
            return None
        test = _between("len({v})", lo, "<=", hi, "<=")
        return FieldCheck("str", test, bounds=(True, lo, False, hi, False, False) if test else None)
    if kind == "int":
        return _number("int", schema, (int,))
    if kind == "float":
        check = _number("float", schema, (int, float))
        if check is None or schema.get("allow_inf_nan", True):
            return check
        lower = schema.get("gt") is not None or schema.get("ge") is not None
        if lower and (schema.get("lt") is not None or schema.get("le") is not None):
            return check  # finite bounds on both sides: inf and nan fail them already
        finite = "{v} - {v} == 0.0"  # false for inf and nan only
        by_length, lo, lo_strict, hi, hi_strict, _ = check.bounds or (False, None, 0, None, 0, 0)
        return check._replace(
            test=f"{check.test} and {finite}" if check.test else finite,
            bounds=(by_length, lo, bool(lo_strict), hi, bool(hi_strict), True),
        )
    if kind == "bool":
        return FieldCheck("bool", "")
    expected = schema.get("expected")
    if not isinstance(expected, list) or not expected:
        return None
    if not all(type(x) is str for x in expected):
        return None
    return FieldCheck("literal", "", tuple(expected))


def _number(kind: str, schema: dict[str, Any], types: tuple[type, ...]) -> FieldCheck | None:
    """Bounds compared in Python as pydantic compares them: only bounds of the field's own
    type, or ints a float represents exactly, and finite."""
    bounds = {k: schema.get(k) for k in ("gt", "ge", "lt", "le")}
    for b in bounds.values():
        if b is None:
            continue
        if type(b) not in types or not math.isfinite(b) or (kind == "float" and float(b) != b):
            return None
    lo, lo_op = (bounds["gt"], "<") if bounds["gt"] is not None else (bounds["ge"], "<=")
    hi, hi_op = (bounds["lt"], "<") if bounds["lt"] is not None else (bounds["le"], "<=")
    if bounds["gt"] is not None and bounds["ge"] is not None:
        return None  # both: pydantic checks each; not worth a case
    if bounds["lt"] is not None and bounds["le"] is not None:
        return None
    test = _between("{v}", lo, lo_op, hi, hi_op)
    data = (False, lo, lo_op == "<", hi, hi_op == "<", False)
    return FieldCheck(kind, test, bounds=data if test else None)


def _between(value: str, lo: Any, lo_op: str, hi: Any, hi_op: str) -> str:
    if lo is not None and hi is not None:
        return f"{lo!r} {lo_op} {value} {hi_op} {hi!r}"
    if lo is not None:
        return f"{lo!r} {lo_op} {value}"
    if hi is not None:
        return f"{value} {hi_op} {hi!r}"
    return ""
