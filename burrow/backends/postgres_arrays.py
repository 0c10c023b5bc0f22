"""PostgreSQL array literals, written as text for the batched statements' ``unnest``.

psycopg adapts a Python list element by element; for the hundred ids, owners and
attempts of a finish or a lease extension that was half the statement's time on
the supervisor (550 us against 297 us a 100-job batch, measured in
benchmarks/README.md). A literal such as ``{1,2,3}`` is sent as one text value
that the statement casts (``%(ids)s::bigint[]``), so the server parses it in C.
"""

from __future__ import annotations

from collections.abc import Iterable


def numbers(values: Iterable[int | float | None]) -> str:
    """``{1,2,NULL}``: ints or floats (repr round-trips a float exactly)."""
    return "{" + ",".join("NULL" if v is None else repr(v) for v in values) + "}"


def ints(values: Iterable[int]) -> str:
    """``{1,2,3}``, the common case of ids and attempts, without a per-element test."""
    return "{" + ",".join(map(str, values)) + "}"


def booleans(values: Iterable[bool]) -> str:
    return "{" + ",".join("t" if v else "f" for v in values) + "}"


def texts(values: Iterable[str | None]) -> str:
    """``{"a","b\\"c",NULL}``: every element quoted, so no text can end the literal early."""
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def byteas(values: Iterable[bytes | None]) -> str:
    """``{"\\\\x6869",NULL}``: each value in bytea's hex form, its backslash escaped for the
    array. psycopg dumps a list of bytes element by element in Python: 100 results of
    1 KB took 3.1 ms a statement that way, 1.05 ms as this literal (benchmarks/README.md)."""
    return "{" + ",".join("NULL" if v is None else '"\\\\x' + v.hex() + '"' for v in values) + "}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
