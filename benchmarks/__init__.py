"""burrow's benchmark suite: ``python -m benchmarks [--quick] [--json PATH] [--backend ...]``.

Every burrow figure is measured beside a raw-SQL baseline (the same claim and
completion statements issued with sqlite3 or psycopg directly, no burrow code),
alternating the two, and reported as the median of several rounds together with
their ratio. See benchmarks/README.md for what each benchmark measures.
"""

import os

POSTGRES_DSN_ENV = "BURROW_TEST_POSTGRES_DSN"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_dsn() -> str:
    return os.environ.get(POSTGRES_DSN_ENV) or DEFAULT_POSTGRES_DSN
