"""``python -m loadtests.hostile -c CONFIG``: send the corpus, report each record's fate."""

from __future__ import annotations

import argparse
import sys

from loadtests.hostile import build, collect, describe, problems, send
from streaming.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--bootstrap", help="overrides the config and STREAMING_BOOTSTRAP")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for outputs")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, bootstrap=args.bootstrap)
    except ConfigError as exc:
        print(f"hostile: error: {exc}", file=sys.stderr)
        return 2
    records = build(cfg)
    print(f"sending {len(records)} hostile records to {cfg.topics.input}", flush=True)
    send(cfg, records)
    collect(cfg, records, args.timeout)
    width = max(len(r.cls) for r in records)
    for r in records:
        print(f"  {r.cls:<{width}}  {describe(r)}")
    bad = problems(records)
    for line in bad:
        print(f"FAIL {line}")
    print("every record has exactly one output" if not bad else f"{len(bad)} record(s) failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
