"""Schema Registry formats without a broker: the dev registry through confluent-kafka's real
client, the Confluent framing, the Avro decoder's answers, the registry outage, the config
contract and the fraud pipeline's schemas. Set STREAMING_TEST_SCHEMA_REGISTRY_URL to run the
registry-facing tests against any Confluent-compatible registry instead of the dev one."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from pipelines.fraud import PIPELINE
from pipelines.fraud.schema import Transaction
from streaming.config import ConfigError, SchemaRegistryConfig, load_config
from streaming.dev.registry import DevRegistry
from streaming.engine.decode import Decoder
from streaming.errors import StartupError
from streaming.formats.avro import AvroDecoder, load_avsc
from streaming.formats.avro_compiled import compile_reader
from streaming.formats.errors import DecodeDeferred
from streaming.formats.framing import FramingError, frame, unframe
from streaming.formats.registry import SchemaSource, check_reachable, registry_client
from streaming.kafka.secrets import REGISTRY_USER_INFO, load_secrets
from tests.kafka_helpers import BASE_CONFIG
from tests.registry_helpers import free_port, registry_url

AVSC = Path(PIPELINE.avro_schema or "")
FRAUD_AVRO = json.loads(AVSC.read_text())


class _Msg:
    """A consumed message's value (the part the decoders read)."""

    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def value(self) -> bytes | None:
        return self._value


def _events(n: int, seed: int = 3) -> list[dict[str, Any]]:
    return [json.loads(e.value) for e in PIPELINE.make_generator(seed).batch(n, 1_760_000_000_000)]


def _payload(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def _subject() -> str:
    return f"test-{uuid.uuid4().hex[:8]}-value"


_CLIENTS: list[SchemaRegistryClient] = []


def _track(client: SchemaRegistryClient) -> SchemaRegistryClient:
    _CLIENTS.append(client)
    return client


def _client(url: str) -> SchemaRegistryClient:
    client = SchemaRegistryClient({"url": url})
    _CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


@pytest.fixture
def registry() -> Any:
    with registry_url() as url:
        yield url


def _registry_cfg(url: str) -> SchemaRegistryConfig:
    return SchemaRegistryConfig(url=url)


def _decoder(url: str, reader: Any = "fraud", **kw: Any) -> AvroDecoder:
    client = _track(registry_client(_registry_cfg(url), None))
    parsed = load_avsc(AVSC) if reader == "fraud" else reader
    return AvroDecoder(kw.get("model", Transaction), 65_536, SchemaSource(client, url), parsed)


# ---------------------------------------------------------------------- the dev registry


def test_dev_registry_serves_the_clients_calls(registry: str) -> None:
    client = _client(registry)
    subject, text = _subject(), AVSC.read_text()
    schema_id = client.register_schema(subject, Schema(text, "AVRO"))
    # the same schema again, even under another subject, keeps its id
    again = _client(registry)
    assert again.register_schema(subject, Schema(text, "AVRO")) == schema_id
    other = _subject()
    assert again.register_schema(other, Schema(text, "AVRO")) == schema_id
    assert {subject, other} <= set(again.get_subjects())
    latest = again.get_latest_version(subject)
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    assert json.loads(again.get_schema(schema_id).schema_str) == FRAUD_AVRO
    assert again.lookup_schema(subject, Schema(text, "AVRO")).schema_id == schema_id
    evolved = {**FRAUD_AVRO, "fields": [*FRAUD_AVRO["fields"], _added_field()]}
    v2 = again.register_schema(subject, Schema(json.dumps(evolved), "AVRO"))
    fresh = _client(registry)  # the client caches "latest"
    assert v2 != schema_id and fresh.get_latest_version(subject).version == 2
    with pytest.raises(SchemaRegistryError) as missing:
        again.get_schema(2_000_000_000)
    assert missing.value.http_status_code == 404


def test_confluent_serializer_and_deserializer_work_against_it(registry: str) -> None:
    """What a stock client writes, the project's decoder reads, and the other way round."""
    record = _events(1)[0]
    ctx = SerializationContext(_subject().removesuffix("-value"), MessageField.VALUE)
    value = AvroSerializer(_client(registry), AVSC.read_text())(record, ctx)
    assert AvroDeserializer(_client(registry))(value, ctx) == record
    good, records, bad = _decoder(registry).decode([_Msg(value)])
    assert (good, bad) == ([0], []) and records[0] == Transaction(**record)


def test_dev_registry_state_file_keeps_ids_across_a_restart(tmp_path: Path) -> None:
    state, port = tmp_path / "registry.json", free_port()
    first = DevRegistry(port, state).start()
    try:
        schema_id = _client(first.url).register_schema("s-value", Schema(AVSC.read_text(), "AVRO"))
    finally:
        first.stop()
    second = DevRegistry(port, state).start()
    try:
        client = _client(second.url)
        assert client.get_latest_version("s-value").schema_id == schema_id
        assert json.loads(client.get_schema(schema_id).schema_str) == FRAUD_AVRO
    finally:
        second.stop()


def test_registry_credentials_come_from_the_secrets_directory(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "sasl.username").write_text("kafka-user")
    registry = DevRegistry(user_info="sr-user:sr-pass").start()
    url = registry.url
    try:
        with pytest.raises(StartupError, match=REGISTRY_USER_INFO):
            check_reachable(_track(registry_client(_registry_cfg(registry.url), str(secrets))), url)
        (secrets / REGISTRY_USER_INFO).write_text("no-colon")
        with pytest.raises(StartupError, match="expected user:password") as bad:
            registry_client(_registry_cfg(url), str(secrets))
        assert "no-colon" not in str(bad.value)
        (secrets / REGISTRY_USER_INFO).write_text("sr-user:sr-pass\n")
        check_reachable(_track(registry_client(_registry_cfg(registry.url), str(secrets))), url)
        # never handed to librdkafka, which would refuse an unknown property
        assert load_secrets(secrets) == {"sasl.username": "kafka-user"}
    finally:
        registry.stop()


# ---------------------------------------------------------------------- framing and decoding


def test_framing_round_trip_and_its_errors() -> None:
    value = frame(258, b"payload")
    assert value[:5] == b"\x00\x00\x00\x01\x02"
    schema_id, payload = unframe(value)
    assert (schema_id, bytes(payload)) == (258, b"payload")
    with pytest.raises(FramingError, match="wrong magic byte 0x01") as wrong:
        unframe(b"\x01" + value[1:])
    assert wrong.value.reason_class == "wrong_magic"
    with pytest.raises(FramingError, match="truncated") as short:
        unframe(value[:3])
    assert short.value.reason_class == "truncated"


def test_avro_records_validate_exactly_as_the_json_ones(registry: str) -> None:
    client = _client(registry)
    schema_id = client.register_schema(_subject(), Schema(AVSC.read_text(), "AVRO"))
    events = _events(50)
    # out of range and not allowed: the same stage and reason as the JSON decoder gives
    events[3] = {**events[3], "amount": -5.0}
    events[7] = {**events[7], "currency": "XXX"}
    framed = [_Msg(frame(schema_id, _payload(FRAUD_AVRO, e))) for e in events]
    plain = [_Msg(json.dumps(e).encode()) for e in events]
    got = _decoder(registry).decode(framed)
    want = Decoder(Transaction, 65_536).decode(plain)
    assert got[0] == want[0] and got[1] == want[1] and got[2] == want[2]
    assert [i for i, _ in got[2]] == [3, 7] and {r.stage for _, r in got[2]} == {"validate"}


def test_each_bad_framing_is_a_decode_rejection_that_says_which(registry: str) -> None:
    client = _client(registry)
    schema_id = client.register_schema(_subject(), Schema(AVSC.read_text(), "AVRO"))
    proto_id = client.register_schema(
        _subject(), Schema('syntax = "proto3";\nmessage M { string a = 1; }\n', "PROTOBUF")
    )
    body = _payload(FRAUD_AVRO, _events(1)[0])
    cases = {
        "wrong_magic": b"\x01" + frame(schema_id, body)[1:],
        "unknown_schema_id": frame(2_000_000_000, body),
        "truncated": frame(schema_id, body[:30]),
        "schema_mismatch": frame(schema_id, body + b"\x02\x04"),
        "wrong_schema_type": frame(proto_id, body),
        "empty": None,
    }
    short_header = b"\x00\x00\x01"
    decoder = _decoder(registry)
    good, _, bad = decoder.decode([_Msg(v) for v in cases.values()] + [_Msg(short_header)])
    assert good == []
    got = {r.reason_class: r for _, r in bad}
    assert set(got) == set(cases) and all(r.stage == "decode" for r in got.values())
    assert "magic byte 0x01" in got["wrong_magic"].reason
    assert "unknown schema id 2000000000" in got["unknown_schema_id"].reason
    assert "truncated" in got["truncated"].reason
    assert "2 bytes left" in got["schema_mismatch"].reason
    assert "PROTOBUF" in got["wrong_schema_type"].reason
    assert bad[-1][1].reason_class == "truncated" and "5-byte" in bad[-1][1].reason
    # a payload that does not decode at all (a string of invalid UTF-8)
    start = body.index(b"card-")
    broken = frame(schema_id, body[: start - 1] + b"\x0a\xff\xfe\xfd\xfc\xfb" + body[start:])
    _, _, bad = decoder.decode([_Msg(broken)])
    assert bad[0][1].reason_class == "schema_mismatch" and "writer schema id" in bad[0][1].reason


# Every kind a compiled reader reads, with the edges of each: long strings (a two-byte
# length), non-ASCII text, negative and 64-bit longs, nulls and enums in unions.
_KINDS = {
    "type": "record",
    "name": "Kinds",
    "fields": [
        {"name": "s", "type": "string"},
        {"name": "b", "type": "bytes"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "t", "type": "boolean"},
        {"name": "n", "type": "null"},
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
        {"name": "u", "type": ["null", "string", "long"]},
        {"name": "w", "type": {"type": "string"}},
    ],
}
_kinds = st.fixed_dictionaries(
    {
        "s": st.text(max_size=90),
        "b": st.binary(max_size=90),
        "i": st.integers(-(2**31), 2**31 - 1),
        "l": st.integers(-(2**63), 2**63 - 1),
        "f": st.floats(width=32, allow_nan=False),
        "d": st.floats(allow_nan=False),
        "t": st.booleans(),
        "n": st.none(),
        "e": st.sampled_from(["RED", "GREEN"]),
        "u": st.none() | st.text(max_size=70) | st.integers(-(2**63), 2**63 - 1),
        "w": st.text(max_size=5),
    }
)


def _fastavro_answer(schema: dict[str, Any], value: bytes) -> Any:
    """What the decoder read before compiled readers: fastavro's record, or None when it
    refuses the payload or leaves bytes over."""
    stream = io.BytesIO(value[5:])
    try:
        record = fastavro.schemaless_reader(stream, schema, None)
    except Exception:  # noqa: BLE001 - any refusal
        return None
    return record if stream.tell() == len(value) - 5 else None


def _mutate(value: bytes, data: st.DataObject) -> bytes:
    """The value cut short, with bytes added, or with a few bytes changed."""
    how = data.draw(st.sampled_from(["cut", "add", "flip", "none"]))
    if how == "cut":
        return value[: data.draw(st.integers(5, len(value)))]
    if how == "add":
        return value + data.draw(st.binary(min_size=1, max_size=4))
    if how == "flip":
        out = bytearray(value)
        for _ in range(data.draw(st.integers(1, 3))):
            if len(out) > 5:
                out[data.draw(st.integers(5, len(out) - 1))] = data.draw(st.integers(0, 255))
        return bytes(out)
    return value


@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
@settings(max_examples=250, deadline=None)
@given(record=_kinds, data=st.data())
def test_a_compiled_reader_gives_fastavros_record_or_leaves_the_value_to_it(
    native: bool, record: dict[str, Any], data: st.DataObject
) -> None:
    """Valid payloads: the same record as fastavro's. Damaged ones: fastavro's record, or
    the reader raises (the decoder then reads the value with fastavro, as before); both the
    C extension's reads and the generated Python's."""
    schema = fastavro.parse_schema(_KINDS)
    read = compile_reader(schema, native=native)
    assert read is not None
    value = frame(1, _payload(_KINDS, record))
    # repr: a changed byte can make a NaN (unequal to itself), and it tells -0.0 from 0.0
    assert repr(read(value)) == repr(_fastavro_answer(schema, value))
    damaged = _mutate(value, data)
    want = _fastavro_answer(schema, damaged)
    try:
        got = read(damaged)
    except Exception:  # noqa: BLE001 - deferring is always allowed
        return
    assert want is not None and repr(got) == repr(want)


def _outcome(read: Any, value: bytes) -> str:
    try:
        return repr(read(value))
    except Exception:  # noqa: BLE001 - any refusal is a deferral
        return "deferred"


@settings(max_examples=400, deadline=None)
@given(record=_kinds, data=st.data(), noise=st.binary(max_size=60))
def test_the_c_reader_answers_exactly_as_the_generated_python(
    record: dict[str, Any], data: st.DataObject, noise: bytes
) -> None:
    """Not only agreeing with fastavro where it answers: the C reads and the Python reads give
    the same record or both defer, on valid, damaged and random values (so the fallback on a
    machine without a compiler behaves as the default does)."""
    schema = fastavro.parse_schema(_KINDS)
    c_read, py_read = compile_reader(schema, native=True), compile_reader(schema, native=False)
    valid = frame(1, _payload(_KINDS, record))
    for value in (valid, _mutate(valid, data), frame(1, noise)):
        assert _outcome(c_read, value) == _outcome(py_read, value)


def test_the_c_reader_at_the_varints_edges() -> None:
    """Hand-made values random bytes rarely make: 10-byte varints at and past 64 bits, 11
    bytes, negative and oversized lengths, a union index past its branches. The C reads and
    the Python reads answer alike, and the answers are fastavro's or deferrals."""
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "Edges",
            "fields": [
                {"name": "l", "type": "long"},
                {"name": "s", "type": "string"},
                {"name": "u", "type": ["null", "long"]},
            ],
        }
    )
    c_read, py_read = compile_reader(schema, native=True), compile_reader(schema, native=False)
    longs = [
        b"\xff" * 9 + b"\x01",  # the largest 10-byte varint: -(2**63)
        b"\xfe" + b"\xff" * 8 + b"\x01",  # 2**63 - 1
        b"\xff" * 9 + b"\x02",  # bit 65: past 64 bits
        b"\xff" * 9 + b"\x7f",
        b"\xff" * 10 + b"\x00",  # 11 bytes
        b"\xff" * 9 + b"\x81\x00",  # 11 bytes, the 10th within 64 bits
        b"\x80" * 9 + b"\x00",  # a long zero
        b"\xff" * 3,  # cut inside the varint
    ]
    strings = [
        b"\x00",
        b"\x02a",
        b"\x01a",
        b"\x03ab",
        b"\x04a",
        b"\x7f" + b"x" * 63,
        b"\x80\x01" + b"y" * 64,
    ]
    unions = [b"\x00", b"\x02\x04", b"\x04\x04", b"\x01\x04", b"\x02"]
    answered = 0
    for long_ in longs:
        for string in strings:
            for union in unions:
                value = frame(1, long_ + string + union)
                got = _outcome(c_read, value)
                assert got == _outcome(py_read, value), value
                if got != "deferred":
                    answered += 1
                    assert got == repr(_fastavro_answer(schema, value)), value
    assert answered >= 15  # every valid combination of the lists above is 18


def test_compiled_readers_only_for_flat_records() -> None:
    def fields(*kinds: Any) -> dict[str, Any]:
        named = [{"name": f"f{i}", "type": k} for i, k in enumerate(kinds)]
        return fastavro.parse_schema({"type": "record", "name": "R", "fields": named})

    assert compile_reader(fastavro.parse_schema(FRAUD_AVRO)) is not None
    assert compile_reader(fastavro.parse_schema(FRAUD_AVRO), native=False) is not None
    assert compile_reader(fastavro.parse_schema("string")) is None
    enum = {"type": "enum", "name": "E", "symbols": ["A"]}
    not_flat = [
        ({"type": "long", "logicalType": "timestamp-millis"},),  # fastavro makes a datetime
        ({"type": "array", "items": "long"},),
        ({"type": "map", "values": "long"},),
        ({"type": "fixed", "name": "F", "size": 4},),
        ({"type": "record", "name": "In", "fields": [{"name": "a", "type": "long"}]},),
        (enum, "E"),  # a named reference
    ]
    for kinds in not_flat:
        for native in (True, False):
            assert compile_reader(fields(*kinds), native=native) is None, (kinds, native)


def test_damaged_values_get_the_dead_letters_fastavro_alone_gives(registry: str) -> None:
    """Fraud payloads cut at every length, extended, and with each byte in turn replaced by
    edge values: the decoder with compiled readers answers exactly as with fastavro alone
    (the same records, the same stages and reasons)."""
    schema_id = _client(registry).register_schema(_subject(), Schema(AVSC.read_text(), "AVRO"))
    values = []
    for event in _events(3):
        value = frame(schema_id, _payload(FRAUD_AVRO, event))
        values += [value[:cut] for cut in range(5, len(value))]
        values += [value + b"\x00", value + b"\x02\x04"]
        for at in range(5, len(value)):
            for byte in (0x00, 0x01, 0x02, 0x41, 0x7F, 0x80, 0xFF):
                values.append(value[:at] + bytes([byte]) + value[at + 1 :])
    client = _track(registry_client(_registry_cfg(registry), None))
    fastavro_only = AvroDecoder(
        Transaction, 65_536, SchemaSource(client, registry), load_avsc(AVSC), compiled=False
    )
    messages = [_Msg(v) for v in values]
    want = fastavro_only.decode(messages)
    got = _decoder(registry).decode(messages)
    assert got[0] == want[0] and got[1] == want[1] and got[2] == want[2]
    classes = {r.reason_class for _, r in want[2]}
    assert {"truncated", "schema_mismatch", "literal_error"} <= classes and len(want[0]) > 100


def _added_field() -> dict[str, Any]:
    return {"name": "device_id", "type": "string", "default": "unknown"}


def test_schema_evolution_both_writer_versions_are_read(registry: str) -> None:
    """A writer that adds a field with a default: Avro resolution against the pipeline's .avsc
    skips it, so the strict pydantic schema (extra=forbid) still accepts the record."""
    client = _client(registry)
    subject = _subject()
    v1 = client.register_schema(subject, Schema(AVSC.read_text(), "AVRO"))
    v2_schema = {**FRAUD_AVRO, "fields": [*FRAUD_AVRO["fields"], _added_field()]}
    v2 = client.register_schema(subject, Schema(json.dumps(v2_schema), "AVRO"))
    events = _events(4)
    values = [
        frame(v1, _payload(FRAUD_AVRO, events[0])),
        frame(v2, _payload(v2_schema, {**events[1], "device_id": "d-1"})),
        frame(v1, _payload(FRAUD_AVRO, events[2])),
        frame(v2, _payload(v2_schema, {**events[3], "device_id": "d-2"})),
    ]
    good, records, bad = _decoder(registry).decode([_Msg(v) for v in values])
    assert bad == [] and good == [0, 1, 2, 3]
    assert [r.event_id for r in records] == [e["event_id"] for e in events]  # type: ignore[attr-defined]


class _WithOptional(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    event_id: str
    note: str | None = None


def test_a_writer_that_drops_an_optional_field_is_read_with_the_default(registry: str) -> None:
    reader = {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
    writer = {"type": "record", "name": "E", "fields": [reader["fields"][0]]}
    client = _client(registry)
    subject = _subject()
    old = client.register_schema(subject, Schema(json.dumps(reader), "AVRO"))
    new = client.register_schema(subject, Schema(json.dumps(writer), "AVRO"))
    decoder = _decoder(registry, reader=fastavro.parse_schema(reader), model=_WithOptional)
    values = [
        frame(old, _payload(reader, {"event_id": "a", "note": "n"})),
        frame(new, _payload(writer, {"event_id": "b"})),
    ]
    _, records, bad = decoder.decode([_Msg(v) for v in values])
    assert bad == [] and records == [
        _WithOptional(event_id="a", note="n"),
        _WithOptional(event_id="b"),
    ]


# ---------------------------------------------------------------------- registry outages


def test_an_outage_is_waited_out_with_backoff_not_dead_lettered(tmp_path: Path) -> None:
    """The registry goes down before a new id is first seen; the fetch retries (the feeding
    thread waits: nothing new is read) until the registry is back, then decodes."""
    state, port = tmp_path / "registry.json", free_port()
    registry = DevRegistry(port, state).start()
    schema_id = _client(registry.url).register_schema("o-value", Schema(AVSC.read_text(), "AVRO"))
    registry.stop()
    waits: list[float] = []
    restarted: list[DevRegistry] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # back after three failed tries
            restarted.append(DevRegistry(port, state).start())

    url = f"http://127.0.0.1:{port}"
    source = SchemaSource(_track(registry_client(_registry_cfg(url), None)), url, sleep=sleep)
    decoder = AvroDecoder(Transaction, 65_536, source, load_avsc(AVSC))
    try:
        value = frame(schema_id, _payload(FRAUD_AVRO, _events(1)[0]))
        good, _, bad = decoder.decode([_Msg(value)])
    finally:
        for r in restarted:
            r.stop()
    assert (good, bad) == ([0], [])
    assert waits[:3] == [0.1, 0.2, 0.4] and source.outages == 1


def test_stopping_during_an_outage_defers_the_batch(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = _track(registry_client(_registry_cfg(url), None))
    decoder = AvroDecoder(
        Transaction, 65_536, SchemaSource(client, url, should_stop=lambda: True), None
    )
    with pytest.raises(DecodeDeferred, match="stopping"):
        decoder.decode([_Msg(frame(1, b"\x00"))])
    with pytest.raises(StartupError, match=r"unreachable.*streaming registry"):
        check_reachable(client, url)


# ---------------------------------------------------------------------- config and schemas


def _raw(tmp_path: Path, **sections: Any) -> Path:
    import yaml

    raw = yaml.safe_load(BASE_CONFIG.read_text())
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_config_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMING_SCHEMA_REGISTRY_URL", raising=False)
    assert load_config(BASE_CONFIG).pipeline.format == "json"
    assert load_config(BASE_CONFIG).outputs.format == "json"
    with pytest.raises(ConfigError, match=r"schema_registry\.url is required with pipeline"):
        load_config(_raw(tmp_path, pipeline={"format": "avro"}))
    with pytest.raises(ConfigError, match=r"outputs\.format: avro"):
        load_config(_raw(tmp_path, outputs={"format": "avro"}))
    with pytest.raises(ConfigError, match=r"pipeline\.format.*'xml'"):
        load_config(_raw(tmp_path, pipeline={"format": "xml"}))
    with pytest.raises(ConfigError, match=r"schema_registry\.url.*http\(s\) URL"):
        load_config(_raw(tmp_path, schema_registry={"url": "127.0.0.1:8081"}))
    monkeypatch.setenv("STREAMING_SCHEMA_REGISTRY_URL", "http://registry.example:8081")
    cfg = load_config(_raw(tmp_path, pipeline={"format": "avro"}))
    assert cfg.schema_registry is not None
    assert cfg.schema_registry.url == "http://registry.example:8081"


# ---------------------------------------------------------------------- JSON Schema


def test_json_schema_values_read_by_the_client_deserializer_then_pydantic(registry: str) -> None:
    """Written by confluent-kafka's own JSONSerializer with the JSON Schema pydantic derives
    from the pipeline's model; read back as the JSON decoder reads the plain JSON."""
    from confluent_kafka.schema_registry.json_schema import JSONSerializer

    from streaming.formats.json_schema import JsonSchemaDecoder

    topic = _subject().removesuffix("-value")
    ctx = SerializationContext(topic, MessageField.VALUE)
    serialize = JSONSerializer(
        json.dumps(Transaction.model_json_schema()), _client(registry), conf={"validate": False}
    )
    events = _events(20)
    events[4] = {**events[4], "currency": "XXX"}  # passes neither schema: the writer's says so
    values = [serialize(e, ctx) for e in events]
    schema_id = int.from_bytes(values[0][1:5], "big")
    source = SchemaSource(_track(registry_client(_registry_cfg(registry), None)), registry)
    decoder = JsonSchemaDecoder(Transaction, 65_536, source, topic)
    good, records, bad = decoder.decode(
        [_Msg(v) for v in values]
        + [_Msg(b"\x01" + values[0][1:]), _Msg(frame(2_000_000_000, values[0][5:]))]
    )
    assert records == [Transaction(**e) for i, e in enumerate(events) if i != 4]
    assert good == [i for i in range(20) if i != 4]
    reasons = {i: r for i, r in bad}
    assert reasons[4].stage == "decode" and reasons[4].reason_class == "schema_mismatch"
    assert f"writer schema id {schema_id}" in reasons[4].reason and "XXX" in reasons[4].reason
    assert reasons[20].reason_class == "wrong_magic"
    assert reasons[21].reason_class == "unknown_schema_id"


# ---------------------------------------------------------------------- Protobuf


def _proto_class() -> Any:
    from streaming.formats.proto_descriptor import message_class

    return message_class(Path(PIPELINE.proto_descriptor or "").read_bytes(), "fraud.Transaction")


def test_protobuf_values_read_with_the_carried_descriptor(registry: str) -> None:
    """Written by confluent-kafka's own ProtobufSerializer; read by the worker's decoder (the
    client's ProtobufDeserializer on the pipeline's message), validated as JSON is."""
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

    from streaming.formats.protobuf import ProtobufDecoder

    cls = _proto_class()
    topic = _subject().removesuffix("-value")
    ctx = SerializationContext(topic, MessageField.VALUE)
    serialize = ProtobufSerializer(cls, _client(registry), {"use.deprecated.format": False})
    events = _events(20)
    events[6] = {**events[6], "amount": -3.0}  # out of range: pydantic says so, as for JSON
    values = [serialize(cls(**e), ctx) for e in events]
    avro_id = _client(registry).register_schema(_subject(), Schema(AVSC.read_text(), "AVRO"))
    source = SchemaSource(_track(registry_client(_registry_cfg(registry), None)), registry)
    decoder = ProtobufDecoder(
        Transaction, 65_536, source, PIPELINE.proto_descriptor or "", "fraud.Transaction", topic
    )
    extra = [
        b"\x01" + values[0][1:],
        frame(2_000_000_000, values[0][5:]),
        frame(avro_id, values[0][5:]),
        values[0][:6] + b"\xff\xff\xff",
    ]
    good, records, bad = decoder.decode([_Msg(v) for v in values + extra])
    plain = Decoder(Transaction, 65_536).decode([_Msg(json.dumps(e).encode()) for e in events])
    assert (good, records) == (plain[0], plain[1]) and bad[:1] == plain[2]
    classes = [r.reason_class for _, r in bad[1:]]
    assert classes == ["wrong_magic", "unknown_schema_id", "wrong_schema_type", "schema_mismatch"]
    assert all(r.stage == "decode" for _, r in bad[1:])


def test_fraud_pydantic_avsc_and_proto_describe_the_same_fields() -> None:
    """One event, three schemas: the same names in the same order, types that carry the
    values; and the carried descriptor is what protoc makes of the .proto today."""
    from google.protobuf.descriptor import FieldDescriptor

    from streaming.formats.proto_descriptor import compile_proto

    proto_types = {
        FieldDescriptor.TYPE_STRING: "string",
        FieldDescriptor.TYPE_INT64: "long",
        FieldDescriptor.TYPE_INT32: "int",
        FieldDescriptor.TYPE_DOUBLE: "double",
        FieldDescriptor.TYPE_BOOL: "boolean",
    }
    proto = {f.name: proto_types[f.type] for f in _proto_class().DESCRIPTOR.fields}
    avro = {f["name"]: f["type"] for f in FRAUD_AVRO["fields"]}
    assert list(proto.items()) == list(avro.items())
    assert list(avro) == list(Transaction.model_fields)
    python = {"string": str, "long": int, "int": int, "double": float, "boolean": bool}
    sample = Transaction(**_events(1)[0])
    for name, kind in avro.items():
        assert type(getattr(sample, name)) is python[kind], name
    carried = Path(PIPELINE.proto_descriptor or "").read_bytes()
    assert compile_proto(Path(PIPELINE.proto_descriptor or "").with_suffix(".proto")) == carried


def test_the_decoder_is_chosen_once_from_pipeline_format(registry: str) -> None:
    from streaming.formats.json_schema import JsonSchemaDecoder
    from streaming.formats.protobuf import ProtobufDecoder
    from streaming.formats.select import make_decoder

    base = load_config(BASE_CONFIG)
    assert type(make_decoder(base, PIPELINE)) is Decoder  # no registry asked
    kinds = {"avro": AvroDecoder, "json-schema": JsonSchemaDecoder, "protobuf": ProtobufDecoder}
    for fmt, kind in kinds.items():
        cfg = base.with_overrides(**{"pipeline.format": fmt, "schema_registry": {"url": registry}})
        decoder = make_decoder(cfg, PIPELINE)
        assert type(decoder) is kind
        decoder.close()  # type: ignore[attr-defined]
    down = base.with_overrides(
        **{
            "pipeline.format": "protobuf",
            "schema_registry": {"url": f"http://127.0.0.1:{free_port()}"},
        }
    )
    with pytest.raises(StartupError, match="unreachable"):
        make_decoder(down, PIPELINE)
