"""The ``burrow`` console script: ``burrow supervisor -c conf/jobs.toml``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = "usage: burrow supervisor -c PATH [--jobs-database-dsn DSN] [--workers N] [--check]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "supervisor":
        from burrow.supervisor.__main__ import main as supervisor_main

        return supervisor_main(args[1:], prog="burrow supervisor")
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
