"""atheris (coverage-guided, libFuzzer) over decode + validate + preprocess, seeded with real
events and every kind of invalid one: a short run here, a long one by hand (see the module)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pipelines.fraud import PIPELINE

ROOT = Path(__file__).resolve().parents[2]


def test_atheris_finds_no_crash(tmp_path: Path, measured) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, e in enumerate(PIPELINE.make_generator(3).batch(40, 1_700_000_000_000, 0.5)):
        (corpus / f"seed-{i}").write_bytes(e.value)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.atheris_decode",
            "-atheris_runs=10000",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    found = re.search(r"atheris: ([\d,]+) inputs, ([\d,]+) records", out)
    assert found, out[-2000:]
    assert int(found.group(1).replace(",", "")) >= 10_000
    assert int(found.group(2).replace(",", "")) > 0  # mutations reached validation's far side
    assert not list(tmp_path.glob("crash-*"))
    measured(f"\n[atheris] {found.group(0)}, no crash")
