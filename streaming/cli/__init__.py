"""The ``streaming`` command: run, broker, topics, produce, demo.

Every error says what was wrong and what to do; exit codes: 0 done, 1 failed while running,
2 bad config, bad arguments or a start-up check that failed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from streaming.cli.commands import fail
from streaming.cli.parser import build_parser
from streaming.config import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(load_tests=bool(args_list) and args_list[0] == "loadtest")
    args = parser.parse_args(args_list)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
