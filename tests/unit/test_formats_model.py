"""Avro readers that validate and build the pipeline's model themselves: every record they
build is the one pydantic's ``validate_python`` makes of fastavro's read, or they leave the
value to that way; models whose validation is more than plain checks get no such reader."""

from __future__ import annotations

import functools
import io
import json
import math
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    BaseModel,
    ValidationError,
)

from pipelines.fraud import PIPELINE
from pipelines.fraud.schema import Transaction
from streaming.config import SchemaRegistryConfig
from streaming.formats.avro import AvroDecoder, load_avsc
from streaming.formats.avro_compiled import C_READER, compile_model_reader
from streaming.formats.framing import frame
from streaming.formats.model_checks import field_checks
from streaming.formats.registry import SchemaSource, registry_client
from tests.fast_readers import Kinds, Upper, identical, models_pydantic_must_validate, records_near
from tests.registry_helpers import registry_url

# The writer's order is not the model's: the record is built in the model's.
_KINDS_AVRO = {
    "type": "record",
    "name": "Kinds",
    "fields": [
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "B"]}},
        {"name": "t", "type": "string"},
        {"name": "n", "type": "long"},
        {"name": "s", "type": "string"},
        {"name": "d", "type": "double"},
        {"name": "i", "type": "int"},
        {"name": "g", "type": "double"},
        {"name": "h", "type": "float"},
        {"name": "b", "type": "boolean"},
        {"name": "c", "type": "string"},
    ],
}
_PARSED = fastavro.parse_schema(_KINDS_AVRO)
# Valid values of each field with their edges (the bounds, nan where allowed, -0.0, non-ASCII
# and 64-character strings), and values next to them or anything else the Avro type carries.
_VALID = {
    "e": st.sampled_from(["RED", "GREEN"]),
    "t": st.text(max_size=70),  # 64 characters and more: a two-byte length
    "n": st.integers(-(2**40) + 1, 2**40 - 1) | st.sampled_from([-(2**40) + 1, 2**40 - 1]),
    "s": st.text(min_size=1, max_size=5) | st.sampled_from(["ü" * 5, "\U0001f600"]),
    "d": st.floats(0.5, 100) | st.sampled_from([0.5, 100.0]),
    "i": st.integers(-10, 10),
    "g": st.floats(min_value=0, exclude_min=True, allow_infinity=False) | st.just(5e-324),
    "h": st.floats(width=32),
    "b": st.booleans(),
    "c": st.sampled_from(["x", "yy", "zzz"]),
}
_ELSE = {
    "e": st.just("B"),
    "t": st.text(max_size=70),
    "n": st.sampled_from([2**40, -(2**40)]) | st.integers(-(2**63), 2**63 - 1),
    "s": st.sampled_from(["", "123456", "ü" * 6]) | st.text(max_size=7),
    "d": st.sampled_from([0.4999999999999999, 100.00000000000001, -0.0, math.nan, math.inf])
    | st.floats(),
    "i": st.sampled_from([-11, 11]) | st.integers(-(2**31), 2**31 - 1),
    "g": st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan]) | st.floats(),
    "h": st.floats(width=32),
    "b": st.booleans(),
    "c": st.sampled_from(["", "xx", "X", "yyy", "zzz "]) | st.text(max_size=3),
}


def _kinds() -> st.SearchStrategy[dict[str, Any]]:
    return records_near(_VALID, _ELSE)


def _payload(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, _PARSED, record)
    return frame(1, out.getvalue())


def _the_old_way(value: bytes) -> BaseModel | None:
    """What the decoder made of the value before model readers: fastavro's record validated
    by pydantic, or None when either refuses it."""
    stream = io.BytesIO(value[5:])
    try:
        record = fastavro.schemaless_reader(stream, _PARSED, None)
    except Exception:  # noqa: BLE001 - any refusal
        return None
    if stream.tell() != len(value) - 5:
        return None
    try:
        return Kinds.__pydantic_validator__.validate_python(record)
    except ValidationError:
        return None


def _damage(value: bytes, data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["cut", "add", "flip", "none", "none", "none"]))
    if how == "cut":
        return value[: data.draw(st.integers(5, len(value)))]
    if how == "add":
        return value + data.draw(st.binary(min_size=1, max_size=3))
    if how == "flip":
        out = bytearray(value)
        for _ in range(data.draw(st.integers(1, 3))):
            out[data.draw(st.integers(5, len(out) - 1))] = data.draw(st.integers(0, 255))
        return bytes(out)
    return value


# Both ways a model reader reads bytes: the C extension (the default where it is built, as
# `make install` builds it) and the generated Python that runs where it is not.
_READERS = {native: compile_model_reader(_PARSED, Kinds, native=native) for native in (True, False)}
NATIVE = pytest.mark.parametrize("native", [True, False], ids=["c", "python"])


def test_the_c_reader_is_built_and_is_the_default() -> None:
    """The install builds the extension; without it every Avro event pays about 2 us more."""
    assert C_READER is not None, "streaming.formats._avro_flat missing: pip install -e . again"
    read = compile_model_reader(_PARSED, Kinds)
    assert isinstance(read, functools.partial) and read.func is C_READER.read_model


@NATIVE
@settings(max_examples=600, deadline=None)
@given(record=_kinds(), data=st.data())
def test_a_model_reader_builds_validate_pythons_model_or_leaves_the_value(
    native: bool, record: dict[str, Any], data: st.DataObject
) -> None:
    """Random records, valid and not, some damaged: whatever the model reader builds is
    identical to the old way's model; it leaves a value only when that is not a valid
    undamaged record (every valid record is answered by it)."""
    _READ = _READERS[native]
    assert _READ is not None
    value = _payload(record)
    damaged = _damage(value, data)
    want = _the_old_way(damaged)
    try:
        got = _READ(damaged)
    except Exception:  # noqa: BLE001 - leaving the value to the old way is always allowed
        assert want is None or damaged != value, "a valid record was not answered"
        return
    assert want is not None and identical(got, want)


_BASE = {"e": "RED", "t": "", "n": 0, "s": "a", "d": 1.0, "i": 0, "g": 1.0, "h": 0.0, "b": True}
_EDGES: dict[str, list[Any]] = {
    "e": ["RED", "GREEN", "B"],
    "t": ["", "ü" * 64, "x" * 70],
    "n": [-(2**40), -(2**40) + 1, 2**40 - 1, 2**40, -(2**63), 2**63 - 1],
    "s": ["", "a", "ü" * 5, "\U0001f600" * 5, "123456", "ü" * 6],
    "d": [0.4999999999999999, 0.5, 100.0, 100.00000000000001, -0.0, math.nan, math.inf],
    "i": [-11, -10, 10, 11, -(2**31), 2**31 - 1],
    "g": [-0.0, 0.0, 5e-324, 1e308, math.inf, -math.inf, math.nan],
    "h": [math.nan, math.inf, -math.inf, -0.0, 3.4028234663852886e38],
    "b": [False, True],
    "c": ["x", "yy", "zzz", "", "X", "xx", "zzz "],
}


@NATIVE
def test_each_check_at_its_edges(native: bool) -> None:
    """A valid record with one field at or just past a bound (or nan, inf, -0.0, a length
    counted in characters, not bytes): the model reader builds the old way's model for each
    valid one and leaves each invalid one."""
    _READ = _READERS[native]
    answered = left = 0
    for name, edges in _EDGES.items():
        for edge in edges:
            value = _payload({"c": "x", **_BASE, name: edge})
            want = _the_old_way(value)
            assert _READ is not None
            try:
                got = _READ(value)
            except Exception:  # noqa: BLE001 - must be an invalid record
                assert want is None, (name, edge)
                left += 1
                continue
            assert want is not None and identical(got, want), (name, edge)
            answered += 1
    assert answered > 20 and left > 20  # both ways taken, not one for all


@NATIVE
def test_the_fraud_model_has_a_model_reader_and_it_agrees(native: bool) -> None:
    events = [json.loads(e.value) for e in PIPELINE.make_generator(4).batch(300, 1_760_000_000_000)]
    avsc = load_avsc(PIPELINE.avro_schema or "")
    read = compile_model_reader(avsc, Transaction, native=native)
    assert read is not None
    validate = Transaction.__pydantic_validator__.validate_python
    for event in events:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, avsc, event)
        got = read(frame(7, out.getvalue()))
        assert identical(got, validate(event))


def test_models_with_more_than_plain_checks_get_no_model_reader() -> None:
    assert field_checks(Transaction) is not None and field_checks(Kinds) is not None
    for model in models_pydantic_must_validate():
        assert field_checks(model) is None, model.model_fields
    string_field = fastavro.parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "name", "type": "string"}]}
    )
    assert compile_model_reader(string_field, Upper) is None
    # the writer's fields must be the model's, each of a type the check takes as it is
    for kinds in (["string", "string"], ["bytes"], [["null", "string"]]):
        fields = [{"name": f"f{i}", "type": k} for i, k in enumerate(kinds)]
        writer = fastavro.parse_schema({"type": "record", "name": "W", "fields": fields})
        assert compile_model_reader(writer, _one_str_field()) is None, kinds


def _one_str_field() -> type[BaseModel]:
    class F0(BaseModel):
        f0: str

    return F0


@pytest.fixture
def registry() -> Iterator[str]:
    with registry_url() as url:
        yield url


def test_a_custom_validator_still_runs_in_the_decoder(registry: str) -> None:
    """A model with a field validator gets no model reader: the validator's answer is the
    record (an uppercased name). The fraud model's decoder does get one, for its own schema."""
    schema = {"type": "record", "name": "R", "fields": [{"name": "name", "type": "string"}]}
    avsc = load_avsc(PIPELINE.avro_schema or "")
    event = json.loads(PIPELINE.make_generator(2).batch(1, 1_760_000_000_000)[0].value)
    with (
        SchemaRegistryClient({"url": registry}) as client,
        registry_client(SchemaRegistryConfig(url=registry), None) as worker_client,
    ):
        subject = f"test-{uuid.uuid4().hex[:8]}"
        upper_id = client.register_schema(f"{subject}-a", Schema(json.dumps(schema), "AVRO"))
        fraud_id = client.register_schema(
            f"{subject}-b", Schema(Path(PIPELINE.avro_schema or "").read_text(), "AVRO")
        )
        source = SchemaSource(worker_client, registry)
        upper = AvroDecoder(Upper, 65_536, source, None)
        good, records, bad = upper.decode([_Msg(frame(upper_id, _body(schema, {"name": "abc"})))])
        assert good == [0] and bad == [] and records[0] == Upper(name="ABC")
        assert upper._fast == {}
        fraud = AvroDecoder(Transaction, 65_536, source, avsc)
        good, records, bad = fraud.decode([_Msg(frame(fraud_id, _body(avsc, event)))] * 2)
        assert good == [0, 1] and bad == [] and records == [Transaction(**event)] * 2
        assert list(fraud._fast) == [frame(fraud_id, b"")]


class _Msg:
    """A consumed message's value (the part the decoders read)."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


def _body(schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def test_a_poll_batch_in_one_c_call_decodes_as_the_loop_does(registry: str) -> None:
    """``read_batch`` reads the valid values of known schemas; every other value is left to
    the loop, so the records and the dead letters are the loop's, in the same order."""
    assert C_READER is not None
    avsc = load_avsc(PIPELINE.avro_schema or "")
    events = [json.loads(e.value) for e in PIPELINE.make_generator(9).batch(400, 1_760_000_000_000)]
    with registry_client(SchemaRegistryConfig(url=registry), None) as client:
        fraud_id = client.register_schema(
            f"test-{uuid.uuid4().hex[:8]}-value",
            Schema(Path(PIPELINE.avro_schema or "").read_text(), "AVRO"),
        )
        rng = random.Random(5)
        mixed: list[_Msg] = []
        for event in events:
            value: bytes | None = frame(fraud_id, _body(avsc, event))
            roll = rng.random()
            if roll < 0.04:
                value = None  # a tombstone
            elif roll < 0.08:
                value = b"\x01" + value[1:]  # wrong magic byte
            elif roll < 0.12:
                value = frame(fraud_id + 9_999, value[5:])  # an id the registry does not know
            elif roll < 0.16:
                value = value[:-3]  # truncated
            elif roll < 0.20:
                value += b"\x00"  # a byte left over
            elif roll < 0.22:
                value = value[:3]  # shorter than the header
            elif roll < 0.24:
                value += b"x" * 70_000  # past max_event_bytes
            mixed.append(_Msg(value))
        source = SchemaSource(client, registry)
        batch, loop = (AvroDecoder(Transaction, 65_536, source, avsc) for _ in range(2))
        loop._batch = None
        for decoder in (batch, loop):  # the first value makes the schema's reader
            decoder.decode([_Msg(frame(fraud_id, _body(avsc, events[0])))])
        assert list(batch._fast_ids) == [fraud_id]
        seen: list[int] = []
        each = batch._each
        batch._each = lambda msgs, idx: (seen.extend(idx), each(msgs, idx))[1]  # type: ignore[method-assign]
        good, records, bad = batch.decode(mixed)
        want_good, want_records, want_bad = loop.decode(mixed)
    assert good == want_good and bad == want_bad
    assert all(identical(a, b) for a, b in zip(records, want_records, strict=True))
    assert len(bad) > 60 and len(good) > 250
    assert seen == sorted(i for i, _ in bad)  # the loop saw the values C was not certain of only


def test_read_batch_leaves_what_it_is_not_certain_of_and_passes_interrupts_on() -> None:
    assert C_READER is not None

    class Raising:
        def __init__(self, exc: BaseException) -> None:
            self.exc = exc

        def value(self) -> bytes:
            raise self.exc

    def reader(value: bytes) -> str:
        if value[5:] == b"bad":
            raise ValueError("not certain")
        if value[5:] == b"stop":
            raise KeyboardInterrupt
        return value[5:].decode()

    msgs = [_Msg(frame(3, b"a")), Raising(ValueError()), _Msg(frame(3, b"bad")), _Msg(b"x")]
    msgs += [_Msg(frame(4, b"b")), _Msg(frame(3, b"c")), _Msg(frame(3, b"d" * 40))]
    indexes, records, rest = C_READER.read_batch(msgs, 20, {3: reader})
    assert (indexes, records, rest) == ([0, 5], ["a", "c"], [1, 2, 3, 4, 6])
    with pytest.raises(KeyboardInterrupt):
        C_READER.read_batch([Raising(KeyboardInterrupt())], 20, {3: reader})
    with pytest.raises(KeyboardInterrupt):
        C_READER.read_batch([_Msg(frame(3, b"stop"))], 20, {3: reader})
    with pytest.raises(TypeError, match="readers"):
        C_READER.read_batch(msgs, 20, [reader])
