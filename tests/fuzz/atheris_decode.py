"""Coverage-guided fuzzing of decode + validate + preprocess with atheris (libFuzzer).

    .venv/bin/python -m tests.fuzz.atheris_decode -atheris_runs=200000

Seeds are valid fraud events, so mutations reach validation and preprocessing, not just the
JSON parser. Invariant: each value is a record or a rejection with a stage and a reason,
and whatever validates makes finite features. A crash leaves a reproducer file (crash-*).
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from pipelines.fraud import PIPELINE
    from pipelines.fraud.preprocessing import fit_params
    from pipelines.fraud.state import STATE
    from streaming.engine.decode import Decoder
    from streaming.engine.types import STAGES
    from streaming.state import PartitionState, history_features

DECODER = Decoder(PIPELINE.schema, max_event_bytes=65_536)
_TRAIN = PIPELINE.make_generator(1).training_data(2000)[0]  # type: ignore[attr-defined]
PRE = PIPELINE.make_preprocessor(
    fit_params(_TRAIN, history_features(STATE, [r.card_id for r in _TRAIN], _TRAIN))
)
STATE_OF_ALL = PartitionState(STATE)
"""One state over every input, so that validated events build card histories too."""
RUNS = {"n": 0, "records": 0, "rejected": 0}


class _Msg:
    __slots__ = ("_v",)

    def __init__(self, v: bytes) -> None:
        self._v = v

    def value(self) -> bytes:
        return self._v


def one_input(data: bytes) -> None:
    idx, records, rejected = DECODER.decode([_Msg(data)])
    RUNS["n"] += 1
    assert len(idx) + len(rejected) == 1, "a value was neither a record nor a rejection"
    for _, r in rejected:
        RUNS["rejected"] += 1
        assert r.stage in STAGES and 0 < len(r.reason) <= 480
        assert re.fullmatch(r"[A-Za-z_]+", r.reason_class), r.reason_class
    if records:
        RUNS["records"] += 1
        rec = records[0]
        state = STATE_OF_ALL.apply(
            rec.card_id, RUNS["n"], rec.ts_ms, [getattr(rec, f) for f in STATE.fields]
        )
        features = PRE.transform(records, np.array([state]))
        assert np.isfinite(features).all(), "a validated event made a non-finite feature"


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    try:
        atheris.Fuzz()
    finally:
        print(
            f"atheris: {RUNS['n']:,} inputs, {RUNS['records']:,} records, "
            f"{RUNS['rejected']:,} rejections, no crash",
            flush=True,
        )


if __name__ == "__main__":
    main()
