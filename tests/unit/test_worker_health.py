"""The worker's liveness answer while its loop waits out an outage by design."""

from __future__ import annotations

import time

from streaming.config import load_config
from streaming.worker import LOOP_STALL_S, Worker


def test_a_loop_waiting_on_the_schema_registry_is_not_called_stalled() -> None:
    worker = Worker(load_config("pipelines/fraud/pipeline.yaml"), worker_id="health-test")
    worker._ready.set()
    worker._turned_at = time.monotonic() - LOOP_STALL_S - 1
    assert not worker.healthz()[0], "a loop that has not turned for the stall time is unhealthy"

    assert worker._waiting_should_stop() is False  # what the registry's retry loop asks
    assert worker.healthz()[0]

    worker.stop()
    assert worker._waiting_should_stop() is True, "a stop ends the wait"
