"""JSON events read by msgspec into the pipeline's model (streaming.formats.fast_json): every
record the fast reading builds is the one pydantic's ``validate_json`` builds, every value it
refuses gets pydantic's answer (the same record or the same dead letter), and valid events of
a plain schema are read by it."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import (
    BaseModel,
    Field,
)

from pipelines.fraud import PIPELINE
from streaming.engine.decode import Decoder
from streaming.formats.fast_json import C_JSON, compile_json_batch
from tests.fast_readers import Kinds, identical, models_pydantic_must_validate, records_near
from tests.fuzz_strategies import hostile_values


class Ignoring(BaseModel):
    """Extra fields ignored (pydantic's default), a lax bool and an unbounded finite float."""

    k: str
    f: float = Field(allow_inf_nan=False)
    b: bool


@dataclass
class Msg:
    _value: Any

    def value(self) -> Any:
        return self._value


_VALID = {
    "s": st.text(min_size=1, max_size=5) | st.sampled_from(["ü" * 5, "\U0001f600" * 5]),
    "t": st.text(max_size=30),
    "i": st.integers(-10, 10),
    "n": st.integers(-(2**40) + 1, 2**40 - 1),
    "d": st.floats(0.5, 100) | st.sampled_from([0.5, 100.0, 1, 100]),
    "g": st.floats(min_value=0, exclude_min=True, allow_infinity=False) | st.just(5e-324),
    "h": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70),
    "b": st.booleans(),
    "c": st.sampled_from(["x", "yy", "zzz"]),
    "e": st.sampled_from(["RED", "GREEN"]),
}
_ELSE: dict[str, st.SearchStrategy[Any]] = {
    "s": st.sampled_from(["", "123456", "ü" * 6, 5, None]),
    "t": st.sampled_from([1, None, True, ["a"], {"a": 1}]),
    "i": st.sampled_from([-11, 11, 1.0, "1", True, 2**70]),
    "n": st.sampled_from([2**40, -(2**40), 1.0, 1e2, "7", True]),
    "d": st.sampled_from([0.4999999999999999, 100.00000000000001, -0.0, "1", True, 2**70]),
    "g": st.sampled_from([0.0, -0.0, -1, "1", None]),
    "h": st.sampled_from([True, "1.5", None, [1.5]]),
    "b": st.sampled_from([0, 1, "true", None]),
    "c": st.sampled_from(["", "xx", "X", "yyy", "zzz ", 1]),
    "e": st.sampled_from(["B", "red", None]),
}
# Number tokens JSON allows, and some it does not, spliced in for a number field's value.
_TOKENS = [
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1" + b"0" * 400,
    b"-0",
    b"1E2",
    b"1.5e+3",
    b"0.1000000000000000055511151231257827",
    b"2.4703282292062327e-324",
    b"9007199254740993",
    b"01",
    b"1.",
    b".5",
    b"+1",
    b"-",
    b"1e",
    b"0x10",
    b"true",
    b"null",
]


def _kinds() -> st.SearchStrategy[dict[str, Any]]:
    return records_near(_VALID, _ELSE)


@st.composite
def _json_of(draw: st.DrawFn, record: dict[str, Any]) -> bytes:
    """The record as JSON, written in one of the ways a producer may write it, then perhaps
    changed at the JSON level (a key twice, one more or less, a number token, the bytes)."""
    ascii_only = draw(st.booleans())  # True: non-ASCII as \\u escapes (left to pydantic)
    text = json.dumps(record, ensure_ascii=ascii_only, separators=draw(_SEPARATORS))
    value = text.encode("utf-8", "surrogatepass")
    how = draw(
        st.sampled_from(["twice", "more", "less", "token", "space", "bytes", "no"] + [""] * 4)
    )
    if how == "twice":  # a key again, with another value: the last one counts for both
        name = draw(st.sampled_from(sorted(record)))
        other = json.dumps(draw(_VALID[name])).encode()
        value = value[:-1] + b', "%s": %s}' % (name.encode(), other)
    elif how == "more":
        value = value[:-1] + b', "extra": 1}'
    elif how == "less":
        cut = dict(record)
        del cut[draw(st.sampled_from(sorted(cut)))]
        value = json.dumps(cut).encode()
    elif how == "token":
        name = draw(st.sampled_from(["i", "n", "d", "g", "h"]))
        cut = {k: v for k, v in record.items() if k != name}
        value = json.dumps(cut).encode()[:-1] + b', "%s": %s}' % (
            name.encode(),
            draw(st.sampled_from(_TOKENS)),
        )
    elif how == "space":
        value = draw(st.sampled_from([b" ", b"\n", b"\t", b"\xef\xbb\xbf"])) + value + b" "
    elif how == "bytes":
        out = bytearray(value)
        for _ in range(draw(st.integers(1, 3))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        value = bytes(out[: draw(st.integers(0, len(out)))] if draw(st.booleans()) else out)
    return value


_SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")])


def _both_ways(decoder: Decoder, values: list[bytes]) -> tuple[Any, Any]:
    """The decoder's answer, and pydantic's alone (the decoder's loop without msgspec)."""
    messages = [Msg(v) for v in values]
    return decoder.decode(messages), decoder._each(messages, range(len(values)))


def _same(got: Any, want: Any) -> None:
    (idx, records, bad), (want_idx, want_records, want_bad) = got, want
    assert idx == want_idx
    assert all(identical(a, b) for a, b in zip(records, want_records, strict=True))
    assert bad == want_bad


KINDS = Decoder(Kinds, max_event_bytes=1000)
IGNORING = Decoder(Ignoring, max_event_bytes=1000)


def test_the_c_loop_is_built_and_plain_schemas_are_read_by_it() -> None:
    """The install builds the extension; without it pydantic validates every JSON event."""
    assert C_JSON is not None, "streaming.formats._json_flat missing: pip install -e . again"
    assert KINDS.fast and IGNORING.fast
    assert Decoder(PIPELINE.schema, max_event_bytes=65_536).fast


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_value_gets_pydantics_answer(data: st.DataObject) -> None:
    """Random records, valid and not, written and damaged in random ways: the same records
    (identical: values, their types, field order, fields set) and the same rejections."""
    values = [data.draw(_kinds().flatmap(_json_of)) for _ in range(data.draw(st.integers(1, 8)))]
    _same(*_both_ways(KINDS, values))


@settings(max_examples=300, deadline=None)
@given(record=st.fixed_dictionaries(_VALID))
def test_valid_unescaped_events_are_read_by_msgspec(record: dict[str, Any]) -> None:
    """The fast reading is not just safe but used: every valid event without a backslash is
    answered by the C loop (none left to pydantic)."""
    value = json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if b"\\" in value:
        return
    fast = compile_json_batch(Kinds)
    assert fast is not None
    idx, records, rest = fast([Msg(value)], 1000)
    assert (idx, rest) == ([0], [])
    assert identical(records[0], Kinds.model_validate_json(value))


@settings(max_examples=300, deadline=None)
@given(
    k=st.text(max_size=5),
    f=st.floats(allow_nan=False) | st.sampled_from([1e308, -1e308]),
    b=st.booleans() | st.sampled_from([0, 1, "true", "no", 1.0]),
    extra=st.dictionaries(st.sampled_from(["x", "k2", "F"]), st.integers(), max_size=2),
    token=st.sampled_from([None, *_TOKENS]),
)
def test_ignored_extras_lax_bools_and_infinities_as_pydantic(
    k: str, f: float, b: Any, extra: dict[str, int], token: bytes | None
) -> None:
    event = {"k": k, "f": f, "b": b, **extra}
    value = json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if token is not None:
        value = value[:-1] + b', "f": ' + token + b"}"
    _same(*_both_ways(IGNORING, [value]))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_values, min_size=1, max_size=20))
def test_hostile_fraud_values_get_pydantics_answer(values: list[bytes]) -> None:
    """The fraud pipeline's own schema, on the hostile-input suite's values."""
    _same(*_both_ways(FRAUD, values))


FRAUD = Decoder(PIPELINE.schema, max_event_bytes=65_536)


def test_a_batch_mixing_read_and_left_values_keeps_the_order() -> None:
    """Values msgspec reads and values it leaves (escaped, invalid, too large, tombstones)
    in one batch: indexes ascending, each record at its message's place."""
    good = [json.loads(e.value) for e in PIPELINE.make_generator(3).batch(6, 1_795_000_000_000)]
    values: list[Any] = [json.dumps(e, separators=(",", ":")).encode() for e in good]
    values[1] = json.dumps({**good[1], "merchant_id": "m-\u00e9"}).encode()  # escaped: pydantic's
    values[3] = b'{"event_id": 1}'
    values.insert(4, None)
    values.append(b"{" + b" " * 70_000 + b"}")
    messages = [Msg(v) for v in values]
    idx, records, bad = FRAUD.decode(messages)
    assert idx == [0, 1, 2, 5, 6]
    assert [r.event_id for r in records] == [good[i]["event_id"] for i in (0, 1, 2, 4, 5)]
    assert [(i, r.reason_class) for i, r in bad] == [
        (3, "string_type"),
        (4, "empty"),
        (7, "too_large"),
    ]
    _same((idx, records, bad), FRAUD._each(messages, range(len(values))))


_NOT_PLAIN = models_pydantic_must_validate()


@pytest.mark.parametrize("model", _NOT_PLAIN, ids=[str(i) for i in range(len(_NOT_PLAIN))])
def test_schemas_with_more_than_plain_checks_are_left_to_pydantic(
    model: type[BaseModel],
) -> None:
    """A validator, a default, an alias, a pattern, a nested model...: not what msgspec does as
    pydantic does, so such a schema gets no fast reading and the decoder validates with
    pydantic alone."""
    assert compile_json_batch(model) is None
    assert not Decoder(model, max_event_bytes=1000).fast


def test_floats_read_are_pydantics_to_the_bit() -> None:
    """Long decimals, subnormals and integers past 2**53 as floats: the same double."""
    for token in (
        b"0.1000000000000000055511151231257827",
        b"2.4703282292062327e-324",
        b"9007199254740993",
        b"1.7976931348623157e308",
        b"123456789.123456789e-300",
    ):
        value = b'{"k": "a", "b": true, "f": ' + token + b"}"
        fast = compile_json_batch(Ignoring)
        assert fast is not None
        _idx, records, rest = fast([Msg(value)], 1000)
        assert rest == []
        want = Ignoring.model_validate_json(value).f
        assert math.copysign(1, records[0].f) == math.copysign(1, want)
        assert records[0].f.hex() == want.hex(), token
