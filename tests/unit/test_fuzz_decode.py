"""Fuzzing the decode and validation path: never a crash, always a record or a reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.fraud import PIPELINE
from pipelines.fraud.preprocessing import fit_params
from streaming.engine.decode import Decoder
from streaming.engine.types import STAGES
from tests.fuzz_strategies import hostile_values

DECODER = Decoder(PIPELINE.schema, max_event_bytes=65_536)
PRE = PIPELINE.make_preprocessor(fit_params(PIPELINE.make_generator(1).training_data(2000)[0]))  # type: ignore[attr-defined]


@dataclass
class Msg:
    _value: bytes

    def value(self) -> bytes:
        return self._value


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_values, min_size=1, max_size=20))
@example(  # found by this test in CI: a subnormal average made amount / average overflow
    values=[
        b'{"event_id":"4","card_id":"c","ts_ms":1000000000579,"amount":8,"currency":"SEK",'
        b'"merchant_category":"restaurants","country":"ES","channel":"pos","card_present":true,'
        b'"home_country":"ES","distance_from_home_km":6,"seconds_since_last_txn":7,'
        b'"txn_count_1h":0,"amount_avg_30d":2e-313}'
    ]
)
def test_every_value_becomes_a_record_or_a_reasoned_rejection(values: list[bytes]) -> None:
    idx, records, rejected = DECODER.decode([Msg(v) for v in values])
    seen = sorted(idx + [i for i, _ in rejected])
    assert seen == list(range(len(values)))  # each exactly once
    for _, r in rejected:
        assert r.stage in STAGES and r.stage in ("decode", "validate")
        assert 0 < len(r.reason) <= 480
        assert re.fullmatch(r"[A-Za-z_]+", r.reason_class), r.reason_class  # a bounded label
    if records:
        features = PRE.transform(records)
        assert features.shape == (len(records), len(PRE.feature_names))
        # whatever passes validation makes finite features
        assert np.isfinite(features).all()
