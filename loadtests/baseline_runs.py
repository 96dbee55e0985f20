"""The baselines of a load-test report, measured in the same run: the I/O ceiling (a
consume-decode-produce passthrough), the model-only ceiling, and a naive faust agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadtests.engine_bench import model_ceiling
from loadtests.load import Ledger, Sender, prepare, remove_run_topics
from loadtests.scenarios import Progress, passthrough_drain
from streaming.config import PipelineConfig


def run_baselines(
    cfg: PipelineConfig, workdir: Path, events: int, naive_events: int, progress: Progress
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pt = passthrough_drain(cfg, workdir, progress, events)
    out["passthrough_events_per_s"] = pt["events_per_s"]
    if pt["unmatched"]:
        out["passthrough_unmatched"] = pt["unmatched"]
    run_cfg, path = prepare(cfg, workdir, "baseline")
    try:
        Sender(run_cfg, Ledger(), seed=11, invalid_ratio=0.0).send(naive_events, None)
        ceiling = model_ceiling(run_cfg, [1, 32, 256], seconds=1.0)
        out["model_rows_per_s"] = {str(k): round(v, 1) for k, v in ceiling.items()}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtests.faust_naive",
                "-c",
                str(path),
                "--events",
                str(naive_events),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        # faust's spinner may write terminal escapes ahead of the result on the same line
        lines = [
            line[line.index("{") :] for line in done.stdout.splitlines() if '{"events"' in line
        ]
        if lines:
            out["naive_faust_events_per_s"] = round(json.loads(lines[-1])["rate"], 1)
        else:
            out["naive_faust_error"] = (done.stdout + done.stderr)[-500:]
    finally:
        remove_run_topics(run_cfg)
    return out
