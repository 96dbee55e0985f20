"""Outputs that always fit their topic: header budgets and dead letters cut to a prefix."""

from __future__ import annotations

import hashlib

from confluent_kafka import KafkaError

from streaming.commit.delivery import ChunkDelivery
from streaming.commit.ledger import OffsetTracker
from streaming.engine.fitting import (
    DLQ_HEADERS_DROPPED,
    DLQ_KEY_TRUNCATED,
    DLQ_ORIGINAL_SHA256,
    DLQ_ORIGINAL_SIZE,
    DLQ_TRUNCATED,
    HEADERS_DROPPED,
    OutputFit,
    fit_dead_letter,
    fit_headers,
    record_size,
)
from streaming.kafka.refusals import RECORD, SETUP, TRANSIENT, classify

OURS = [("dead_letter.stage", b"decode"), ("dead_letter.offset", b"7")]


def test_headers_within_budget_come_back_unchanged() -> None:
    headers = [("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"), ("x", b"1")]
    kept, dropped = fit_headers(headers, 1000)
    assert kept is headers and dropped == 0


def test_traceparent_is_kept_first_and_the_rest_in_order_until_the_budget() -> None:
    tp = ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")
    headers = [("big", b"x" * 5000), ("small", b"y"), tp, ("huge", b"z" * 100_000)]
    kept, dropped = fit_headers(headers, 200)
    assert kept == [tp, ("small", b"y")]
    assert dropped == 2


def test_a_dead_letter_that_fits_is_the_original_plus_our_headers() -> None:
    value, key, headers = fit_dead_letter(b"v" * 100, b"card", [("a", b"1")], OURS, 10_000)
    assert value == b"v" * 100 and key == b"card"
    assert headers == [("a", b"1"), *OURS]


def test_a_dead_letter_too_large_keeps_a_prefix_its_size_and_hash() -> None:
    original = bytes(range(256)) * 8000  # 2,048,000 bytes
    limit = 100_000
    value, key, headers = fit_dead_letter(original, b"card-1", [("h", b"x" * 500_000)], OURS, limit)
    assert value is not None and original.startswith(value) and len(value) > limit // 2
    assert key == b"card-1"
    h = dict(headers)
    assert h[DLQ_TRUNCATED] == b"true"
    assert h[DLQ_ORIGINAL_SIZE] == str(len(original)).encode()
    assert h[DLQ_ORIGINAL_SHA256] == hashlib.sha256(original).hexdigest().encode()
    assert h[DLQ_HEADERS_DROPPED] == b"1"
    assert all(k in h for k, _ in OURS)
    assert record_size(value, key, headers) <= limit


def test_a_huge_key_is_cut_too_and_said_so() -> None:
    value, key, headers = fit_dead_letter(b"v", b"k" * 1_000_000, None, OURS, 50_000)
    assert key is not None and len(key) < 50_000 and dict(headers)[DLQ_KEY_TRUNCATED] == b"true"
    assert record_size(value, key, headers) <= 50_000


def test_zero_room_keeps_our_headers_alone() -> None:
    value, key, headers = fit_dead_letter(b"v" * 10, b"k" * 10, [("a", b"1")], OURS, 0)
    assert value == b"" and key == b""
    assert [k for k, _ in headers[: len(OURS)]] == [k for k, _ in OURS]


def test_output_fit_picks_out_rows_too_large_and_marks_dropped_headers() -> None:
    fit = OutputFit(limit=20_000, header_budget=1000, max_payload=1000)
    payloads = [b"p" * 200] * 3
    keys = [b"card", b"k" * 30_000, b"card"]
    headers = [None, None, [("traceparent", b"t" * 55), ("big", b"b" * 5000)]]
    assert fit.needed(keys, headers)
    assert not fit.needed([b"card"] * 3, [None] * 3)
    assert not fit.needed([b"card"] * 3, [[("traceparent", b"t" * 55)]] * 3)  # within budget
    fitted = fit.fit(range(3), payloads, keys, headers)
    assert fitted.rows == [0, 2] and fitted.too_large == [1] and fitted.dropped == 1
    assert fitted.changed[2] == [("traceparent", b"t" * 55), (HEADERS_DROPPED, b"1")]
    untouched = fit.fit(range(3), payloads, [b"card"] * 3, [None] * 3)
    assert untouched.rows == range(3) and not untouched.changed and not untouched.too_large


def test_refusals_are_told_apart() -> None:
    assert classify(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)) == RECORD
    assert classify(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)) == SETUP
    assert classify(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)) == SETUP
    assert classify(KafkaError(KafkaError._MSG_TIMED_OUT)) == TRANSIENT


class _Msg:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


def test_a_refused_prediction_is_handed_over_and_the_rest_acked() -> None:
    tracker = OffsetTracker()
    ledger = tracker.ledger("in", 0)
    ledger.register_many([0, 1, 2])
    done: list[int] = []
    refused: list[tuple[list[int], int]] = []
    payloads = [b"a", b"b", b"c"]
    delivery = ChunkDelivery(
        [ledger] * 3,
        [0, 1, 2],
        [0, 0, 0],
        lambda d, lat: done.append(d.size),
        lambda positions, errs: refused.append((positions, len(errs))),
        payloads,
    )
    delivery.report(None, _Msg(b"a"))  # type: ignore[arg-type]
    delivery.report(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), _Msg(b"b"))  # type: ignore[arg-type]
    delivery.report(None, _Msg(b"c"))  # type: ignore[arg-type]
    assert refused == [([1], 1)] and done == [2]
    assert tracker.commit_points() == [("in", 0, 1)]  # offset 1 waits for its dead letter
    ledger.ack(1)
    assert tracker.commit_points() == [("in", 0, 3)]
