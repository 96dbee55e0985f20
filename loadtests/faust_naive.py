"""The baseline a team would write by hand with faust-streaming: one agent, one event at a
time through the schema, the features and the model, one prediction sent per event.

    python -m loadtests.faust_naive -c CONFIG --events N

Drains the config's input topic from the start (its own consumer group) and prints one JSON
line: events, seconds from the first event to the last prediction, events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
import uuid

import faust
import numpy as np

from streaming.config import load_config
from streaming.pipeline import load_pipeline
from streaming.runtimes.registry import create_runtime
from streaming.state import StateStage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()
    cfg = load_config(args.config)
    spec = load_pipeline(cfg.pipeline.module)
    vc = cfg.model.versions[0]
    runtime = create_runtime(vc.runtime, cfg.version_dir(vc), vc.device, vc.threads)
    runtime.load()
    pre = spec.make_preprocessor(runtime.metadata.preprocessing)
    stage = StateStage(spec.state) if spec.state is not None else None
    app = faust.App(
        f"naive-faust-{uuid.uuid4().hex[:6]}",
        broker=";".join(f"kafka://{h}" for h in cfg.kafka.bootstrap.split(",")),
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
    )
    source = app.topic(cfg.topics.input, value_type=bytes)
    sink = app.topic(cfg.topics.predictions, value_type=bytes)
    state = {"n": 0, "first": 0.0, "last": 0.0}

    @app.agent(source)
    async def score(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            if state["n"] == 0:
                state["first"] = time.monotonic()
            state["n"] += 1
            try:
                record = spec.schema.model_validate_json(event.value)
                if stage is None:
                    x = pre.transform([record])
                else:  # the pipeline's per-key features, event by event
                    msg = event.message
                    per_key = stage.compute_one(
                        msg.topic, msg.partition, msg.key, msg.offset, record
                    )
                    x = pre.transform([record], per_key)
                if not np.isfinite(x).all():
                    raise ValueError("non-finite feature")
                score = float(runtime.predict(x)[0])
                body = {"event_id": getattr(record, spec.id_field), "score": score}
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                body = {"error": str(exc)[:200]}
            await sink.send(key=event.key, value=json.dumps(body).encode())
            if state["n"] >= args.events:
                state["last"] = time.monotonic()
                seconds = state["last"] - state["first"]
                print(
                    json.dumps(
                        {"events": state["n"], "seconds": seconds, "rate": state["n"] / seconds}
                    ),
                    flush=True,
                )
                os.kill(os.getpid(), signal.SIGTERM)

    worker = faust.Worker(app, loglevel="ERROR", quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


if __name__ == "__main__":
    main()
