"""A reader compiled once per writer schema for flat Avro records, fastavro's answer faster.

fastavro's schemaless reader reads a record field by field through a file object (one
``read`` call per varint byte, per string, per double): on the fraud event that is 4-5 us of
the Avro decode, more than pydantic's validation of the result. A flat record (fields of
null, boolean, int, long, float, double, string, bytes, an enum, or a union of these) is
read here by straight-line Python generated for its field list, indexing the value's bytes
directly: about 1.7 times as fast. Nested records, arrays, maps, fixed, named references
and logical types are not compiled: such a schema is read by fastavro alone.

The compiled reader answers only what is certainly fastavro's answer. Anything unusual (the
value ends early, bytes are left over, a negative length, a varint longer than 64 bits, a
union or enum index out of range, invalid UTF-8) raises: ``Defer``, or the IndexError,
struct.error or UnicodeDecodeError of the read itself. The caller then reads the value
with fastavro, which then gives the same record or the same rejection as it always
did. So a compiled reader changes how fast a valid event is read, never what any event
becomes.

Where the C extension streaming.formats._avro_flat is built (``C_READER``; setup.py builds
it at install, optional where no compiler is found) it does the byte reading: one call reads
every field into a tuple, about 0.3 us for the fraud event against 2.4 us in generated
Python, with the same answers and the same deferrals (the tests run both). A model reader is
then one C call that reads, tests and builds.

A model reader (``compile_model_reader``) goes one step further for a pipeline whose pydantic
model has plain constraints only (streaming.formats.model_checks): it tests each value as
pydantic would and builds the model itself, a third of the cost of ``validate_python``; any
value it is not certain of raises in the same way, and the caller reads and validates it as
before.

Pure functions, no state: the Avro decoder keeps one compiled reader per schema id.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import BaseModel

from streaming.formats.framing import HEADER_BYTES
from streaming.formats.model_checks import (
    FieldCheck,
    builder_lines,
    builder_plan,
    builder_scope,
    field_checks,
)

try:
    from streaming.formats import _avro_flat as C_READER
except ImportError:  # built without a C compiler: the generated Python reads alone
    C_READER = None  # type: ignore[assignment]

_SIMPLE = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}
_TAKES = {
    "str": ("string",),
    "int": ("int", "long"),
    "float": ("float", "double"),
    "bool": ("boolean",),
}
"""The Avro types whose values have exactly the Python type a check of that kind takes."""


if C_READER is not None:
    Defer = C_READER.Defer
    """The compiled reader does not answer for this value: read it with fastavro."""
else:

    class Defer(Exception):  # type: ignore[no-redef]
        """The compiled reader does not answer for this value: read it with fastavro."""


CompiledReader = Callable[[bytes], dict[str, Any]]
"""A framed value (header included) -> the record fastavro reads from its body."""
ModelReader = Callable[[bytes], BaseModel]
"""A framed value -> the model pydantic's ``validate_python`` makes of fastavro's record."""


def compile_reader(writer: Any, native: bool = C_READER is not None) -> CompiledReader | None:
    """A reader for the parsed record schema ``writer``, or None when it is not flat;
    ``native``: its bytes read by the C extension (the default where it is built)."""
    fields = _flat_fields(writer)
    if fields is None:
        return None
    if native:
        ops = [_op(kind) for _, kind in fields]
        if any(op is None for op in ops):
            return None
        scope: dict[str, Any] = {"_prog": tuple(ops)}
        values = [f"v{i}" for i in range(len(fields))]
        record = ", ".join(f"{name!r}: v{i}" for i, (name, _) in enumerate(fields))
        return _compile(writer, [*_native_read(values), f"return {{{record}}}"], scope)
    body: list[str] = []
    for i, (_, kind) in enumerate(fields):
        lines = _field(kind, f"v{i}")
        if lines is None:
            return None
        body += lines
    record = ", ".join(f"{name!r}: v{i}" for i, (name, _) in enumerate(fields))
    return _compile(writer, [*body, *_ENDS_HERE, f"return {{{record}}}"], {})


def compile_model_reader(
    writer: Any, model: type[BaseModel], native: bool = C_READER is not None
) -> ModelReader | None:
    """A reader that also validates: the writer's flat record read, each value tested as
    pydantic would (streaming.formats.model_checks), and the model built when every test
    passes; None when the writer's fields are not the model's (the same names, each of a type
    the model's check takes as it is) or the model's validation is more than such tests.
    ``native``: read, tested and built by the C extension in one call (the default where it
    is built); else by generated Python.

    It raises on any value it does not certainly answer (a value fastavro would read
    otherwise, or one pydantic might refuse): the caller then reads and validates the value
    as it always did."""
    checks = field_checks(model)
    fields = _flat_fields(writer)
    if checks is None or fields is None or {n for n, _ in fields} != set(checks):
        return None
    if native:
        return _native_model_reader(fields, checks, model)
    scope = builder_scope(model)
    body: list[str] = []
    tests: list[str] = []
    for i, (name, kind) in enumerate(fields):
        check, out = checks[name], f"v{i}"
        lines = _checked_field(kind, check, out, i, scope)
        if lines is None:
            return None
        body += lines
        if check.test:
            tests.append(check.test.replace("{v}", out))
    if tests:
        body += [f"if not ({' and '.join(tests)}):", "    raise Defer"]
    index = {name: i for i, (name, _) in enumerate(fields)}
    names = list(checks)
    build = builder_lines(names, [f"v{index[n]}" for n in names])
    return _compile(writer, [*body, *_ENDS_HERE, *build], scope)


def _native_model_reader(
    fields: list[tuple[str, Any]], checks: dict[str, FieldCheck], model: type[BaseModel]
) -> ModelReader | None:
    """The model reader as one C call: read, check and build (``read_model``)."""
    ops: list[tuple[Any, ...]] = []
    tests: list[tuple[Any, ...] | None] = []
    for name, kind in fields:
        found = _checked_op(kind, checks[name])
        if found is None:
            return None
        op, allowed = found
        bounds = checks[name].bounds
        if bounds is not None and checks[name].kind == "float":
            # a float field's int bounds are exact as floats (model_checks): compared in C
            by_length, lo, lo_strict, hi, hi_strict, finite = bounds
            lo, hi = (None if b is None else float(b) for b in (lo, hi))
            bounds = (by_length, lo, lo_strict, hi, hi_strict, finite)
        ops.append(op)
        if bounds is None and allowed is None:
            tests.append(None)
        else:
            tests.append((*(bounds or (False, None, False, None, False, False)), allowed))
    index = {name: i for i, (name, _) in enumerate(fields)}
    plan = builder_plan(model, [index[n] for n in model.model_fields])
    return partial(C_READER.read_model, tuple(ops), tuple(tests), plan, HEADER_BYTES)


_ENDS_HERE = ["if p != len(buf):", "    raise Defer"]


def _native_read(values: list[str]) -> list[str]:
    """The line that reads every field with the C extension (which checks the end too)."""
    return [f"{', '.join(values)}, = _native(buf, p, _prog)"]


def _flat_fields(writer: Any) -> list[tuple[str, Any]] | None:
    """(name, type) of a record schema's fields, or None when it is not a record with
    distinct string names."""
    if not isinstance(writer, dict) or writer.get("type") != "record":
        return None
    fields = writer.get("fields")
    if not isinstance(fields, list) or not fields:
        return None
    if not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in fields):
        return None
    names = [f["name"] for f in fields]
    if len(set(names)) != len(names):
        return None
    return [(f["name"], f.get("type")) for f in fields]


def _compile(writer: dict[str, Any], body: list[str], scope: dict[str, Any]) -> Any:
    source = "\n".join(["def read(buf):", f"    p = {HEADER_BYTES}", *("    " + x for x in body)])
    scope = {
        **scope,
        "Defer": Defer,
        "_native": C_READER.read if C_READER is not None else None,
        "_float": struct.Struct("<f").unpack_from,
        "_double": struct.Struct("<d").unpack_from,
    }
    exec(compile(source, f"<avro reader {writer.get('name')}>", "exec"), scope)  # noqa: S102
    return scope["read"]


def _checked_case(kind: Any, check: FieldCheck) -> tuple[Any, str] | None:
    """How a field the model checks is read, when the Avro type gives exactly the Python type
    the check takes: (the type, "literal-string" | "literal-enum" | "plain"); None when it is
    not compiled. The one decision both readers (generated Python and C) follow."""
    if isinstance(kind, dict) and "logicalType" not in kind and kind.get("type") != "enum":
        kind = kind.get("type")
    if check.kind == "literal":
        if kind == "string":
            return kind, "literal-string"
        if isinstance(kind, dict) and kind.get("type") == "enum":
            return kind, "literal-enum"
        return None
    return (kind, "plain") if kind in _TAKES[check.kind] else None


def _checked_field(
    kind: Any, check: FieldCheck, out: str, i: int, scope: dict[str, Any]
) -> list[str] | None:
    """Lines that read one value for a field the model checks (a str Literal read from a
    string is looked up by its bytes: a miss raises KeyError, which defers)."""
    found = _checked_case(kind, check)
    if found is None:
        return None
    kind, case = found
    if case == "literal-string":
        scope[f"_lit{i}"] = {c.encode(): c for c in check.choices}
        return _string(out, f"_lit{i}[buf[p:e]]")
    lines = _field(kind, out)
    if lines is None or case == "plain":
        return lines
    scope[f"_set{i}"] = frozenset(check.choices)
    return [*lines, f"if {out} not in _set{i}:", "    raise Defer"]


def _checked_op(
    kind: Any, check: FieldCheck
) -> tuple[tuple[Any, ...], frozenset[str] | None] | None:
    """The C reader's op for a field the model checks, and the values an enum must be one
    of (a str literal read from an enum)."""
    found = _checked_case(kind, check)
    if found is None:
        return None
    kind, case = found
    if case == "literal-string":
        return (C_READER.LITERAL, tuple((c.encode(), c) for c in check.choices)), None
    op = _op(kind)
    if op is None:
        return None
    return op, (frozenset(check.choices) if case == "literal-enum" else None)


def _op(kind: Any) -> tuple[Any, ...] | None:
    """The C reader's op for one value of ``kind`` (None: not compiled); ``_field``'s cases."""
    c = C_READER
    if isinstance(kind, list):
        branches = [None if isinstance(b, list) else _op(b) for b in kind]
        if any(b is None for b in branches):
            return None
        return (c.UNION, tuple(branches))
    if isinstance(kind, dict):
        if "logicalType" in kind:
            return None
        if kind.get("type") == "enum":
            symbols = kind.get("symbols")
            if not isinstance(symbols, list) or not symbols:
                return None
            return (c.ENUM, tuple(symbols))
        kind = kind.get("type")
    simple = {
        "null": c.NULL,
        "boolean": c.BOOLEAN,
        "int": c.LONG,
        "long": c.LONG,
        "float": c.FLOAT,
        "double": c.DOUBLE,
        "string": c.STRING,
        "bytes": c.BYTES,
    }
    return (simple[kind],) if isinstance(kind, str) and kind in simple else None


def _field(kind: Any, out: str) -> list[str] | None:
    """Lines that read one value of ``kind`` at ``p`` into ``out`` (None: not compiled)."""
    if isinstance(kind, list):
        return _union(kind, out)
    if isinstance(kind, dict):
        if "logicalType" in kind:
            return None  # fastavro converts these (dates, decimals, uuids)
        if kind.get("type") == "enum":
            symbols = kind.get("symbols")
            if not isinstance(symbols, list) or not symbols:
                return None
            check = [f"if not 0 <= n < {len(symbols)}:", "    raise Defer"]
            return [*_long("n"), *check, f"{out} = {tuple(symbols)!r}[n]"]
        kind = kind.get("type")
    if kind not in _SIMPLE:
        return None
    if kind == "null":
        return [f"{out} = None"]
    if kind == "boolean":
        return [f"{out} = buf[p] != 0", "p += 1"]  # fastavro: any byte but 0 is true
    if kind in ("int", "long"):
        return [*_long("n"), f"{out} = n"]
    if kind == "float":
        return [f"{out} = _float(buf, p)[0]", "p += 4"]
    if kind == "double":
        return [f"{out} = _double(buf, p)[0]", "p += 8"]
    return _string(out, "buf[p:e].decode()" if kind == "string" else "buf[p:e]")


def _string(out: str, value: str) -> list[str]:
    """A length, then ``value`` made of the bytes ``buf[p:e]`` that follow."""
    return [
        # A length below 64 is one even byte; longer or negative ones take the varint path.
        "b = buf[p]",
        "if b & 0x81:",
        *("    " + line for line in _long("n")),
        "    if n < 0:",
        "        raise Defer",
        "else:",
        "    n = b >> 1",
        "    p += 1",
        # A slice past the end is short, not an error: p then ends past len(buf), which the
        # last check (or the next field's read) refuses.
        "e = p + n",
        f"{out} = {value}",
        "p = e",
    ]


def _union(branches: list[Any], out: str) -> list[str] | None:
    """A union: its branch index, then that branch (branches that are unions are not Avro)."""
    lines = [*_long("u")]
    for index, branch in enumerate(branches):
        if isinstance(branch, list):
            return None
        read = _field(branch, out)
        if read is None:
            return None
        lines += [f"{'if' if index == 0 else 'elif'} u == {index}:"]
        lines += ["    " + line for line in read]
    return [*lines, "else:", "    raise Defer"]


def _long(out: str) -> list[str]:
    """A zig-zag varint at ``p`` into ``out``; more than 64 bits is not fastavro's to read
    the same way (its C shifts wrap), so it defers."""
    return [
        "b = buf[p]",
        "p += 1",
        f"{out} = b & 0x7F",
        "s = 7",
        "while b & 0x80:",
        "    b = buf[p]",
        "    p += 1",
        f"    {out} |= (b & 0x7F) << s",
        "    s += 7",
        f"if s > 70 or {out} >> 64:",
        "    raise Defer",
        f"{out} = ({out} >> 1) ^ -({out} & 1)",
    ]
