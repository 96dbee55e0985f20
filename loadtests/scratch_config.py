"""A copy of the shipped fraud pipeline with its own topics and group, for one test or one run
of a load test on a shared broker; dotted-key overrides (``worker.processes=2``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "pipelines" / "fraud" / "pipeline.yaml"
_TOPICS = ("input", "predictions", "dead_letters", "telemetry", "control")


def write_scratch_config(
    tmp: Path, bootstrap: str, *, prefix: str = "t", group: str = "g", **overrides: Any
) -> Path:
    """Write the config (not validated: tests of bad configs use it too) and return its path.
    Topics are ``<prefix>-<tag>.<role>``, the group ``<group>-<tag>``, one new tag a call."""
    raw = yaml.safe_load(BASE_CONFIG.read_text())
    tag = uuid.uuid4().hex[:8]
    raw["kafka"]["bootstrap"] = bootstrap
    raw["kafka"]["group"] = f"{group}-{tag}"
    for key in _TOPICS:
        raw["topics"][key] = f"{prefix}-{tag}.{key}"
    raw["models_dir"] = str(ROOT / "models")
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp / f"pipeline-{tag}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
