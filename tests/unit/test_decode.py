"""Bytes -> records or dead letters with the right stage and a readable reason."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streaming.engine.decode import Decoder
from streaming.engine.outputs import dead_letter_headers, encode_predictions
from streaming.engine.types import STAGE_DECODE, STAGE_VALIDATE


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_id: str
    amount: float = Field(gt=0)


@dataclass
class Msg:
    _value: bytes | None

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return b"k"

    def headers(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def test_each_kind_of_bad_value_gets_its_stage() -> None:
    decoder = Decoder(Event, max_event_bytes=100)
    values = [
        b'{"event_id":"a","amount":1.5}',
        b'{"event_id":"b","amount":',
        b'{"event_id":"c\xff","amount":1}',
        b'{"event_id":"d","amount":-1}',
        b'{"event_id":"e"}',
        b"[1,2]",
        b'{"event_id":"f","amount":1,"pad":"' + b"x" * 200 + b'"}',
        None,
    ]
    idx, records, bad = decoder.decode([Msg(v) for v in values])
    assert idx == [0] and records[0].event_id == "a"  # type: ignore[attr-defined]
    stages = {i: r.stage for i, r in bad}
    assert stages == {
        1: STAGE_DECODE,
        2: STAGE_DECODE,
        3: STAGE_VALIDATE,
        4: STAGE_VALIDATE,
        5: STAGE_VALIDATE,
        6: STAGE_DECODE,
        7: STAGE_DECODE,
    }
    reasons = {i: r.reason for i, r in bad}
    assert "amount" in reasons[3] and "greater than 0" in reasons[3]
    assert "amount: Field required" in reasons[4]
    assert "exceeds pipeline.max_event_bytes (100)" in reasons[6]


def test_dead_letter_headers_keep_the_originals_and_say_where() -> None:
    from streaming.engine.types import Rejection

    h = dict(
        dead_letter_headers(
            [("traceparent", b"00-ab")], Rejection("validate", "x", "y"), "in", 3, 42, "w1"
        )
    )
    assert h["traceparent"] == b"00-ab"
    assert h["dead_letter.stage"] == b"validate"
    assert (h["dead_letter.topic"], h["dead_letter.partition"], h["dead_letter.offset"]) == (
        b"in",
        b"3",
        b"42",
    )


def test_predictions_are_valid_json_with_the_contract_fields() -> None:
    import json

    out = encode_predictions(
        ['id"1', "id2"],
        [1700000000000, 1700000000001],
        np.array([0.75, 0.1], dtype=np.float32),
        model="fraud",
        version="v2",
        threshold=0.5,
        scored_ms=1700000000009,
        worker="w",
    )
    first, second = (json.loads(b) for b in out)
    assert first == {
        "event_id": 'id"1',
        "score": 0.75,
        "flagged": True,
        "ts_ms": 1700000000000,
        "scored_ms": 1700000000009,
        "model": "fraud",
        "version": "v2",
        "worker": "w",
        "decision": "decline",
        "reasons": [],
    }
    assert second["flagged"] is False
    assert second["decision"] == "approve"


def test_event_ids_are_quoted_as_the_json_encoder_does() -> None:
    import json

    ids = ['q"', "back\\slash", "é", "\u2028", "\x00ctl", "😀"]
    out = encode_predictions(
        ids,
        [1700000000000] * len(ids),
        np.zeros(len(ids), dtype=np.float32),
        model="fraud",
        version="v2",
        threshold=0.5,
        scored_ms=1,
        worker="w",
    )
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for event_id, body in zip(ids, out, strict=True):
        assert body.startswith(b'{"event_id":' + dumps(event_id).encode())
        assert json.loads(body)["event_id"] == event_id
