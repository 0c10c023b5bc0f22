"""Values as people write them (burrow.notation): durations, sizes, addresses, DSNs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from burrow.notation import (
    bind_text,
    duration_text,
    parse_bind,
    parse_duration,
    parse_size,
    redact_dsn,
    shown_dsn,
    size_text,
    sqlite_absolute,
)


def test_redact_dsn() -> None:
    assert redact_dsn("postgresql://user:secret@host/db") == "postgresql://user:***@host/db"
    assert redact_dsn("postgresql+psycopg://user:secret@host:5432/db?sslmode=require") == (
        "postgresql+psycopg://user:***@host:5432/db?sslmode=require"
    )
    assert redact_dsn("postgresql://user@host/db") == "postgresql://user@host/db"
    assert redact_dsn("postgresql://host/db?user=u&password=secret&x=1") == (
        "postgresql://host/db?user=u&password=***&x=1"
    )
    assert redact_dsn("postgresql://u:p@ss/w@rd@host/db") == "postgresql://u:***@host/db"
    assert redact_dsn("host=db password='se cret' user=u") == "host=db password=*** user=u"
    assert redact_dsn("postgresql:/u:secret@host/db") == "postgresql:***@host/db"
    assert redact_dsn("postgresql:///u:secret@host/db") == "postgresql:///u:***@host/db"
    assert redact_dsn("postgresql//u:secret@host/db") == "postgresql//u:***@host/db"
    assert redact_dsn("sqlite:///var/lib/burrow/jobs.db") == "sqlite:///var/lib/burrow/jobs.db"
    assert redact_dsn("sqlite:///burrow.db") == "sqlite:///burrow.db"



@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), (" 2 s ", 2.0),
     ("0.1h", 360.0), ("7d", 604800.0), ("0.5d", 43200.0), ("45", 45.0), (3, 3.0), (0.25, 0.25), ("0", 0.0)],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "3 parsecs", "-1s", "-7d", "1e3s", "5M", "1D", "1w", "1.5.s", "nan", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True])
def test_parse_duration_rejects_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(value)


@given(st.integers(0, 10**9))
def test_parse_duration_milliseconds(n: int) -> None:
    assert parse_duration(f"{n}ms") == n / 1000


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MB", 512_000_000), ("1GiB", 1024**3), ("100kB", 100_000), ("100KB", 100_000), ("2kib", 2048),
     ("1.5KiB", 1536), ("10 B", 10), ("4096", 4096), (4096, 4096)],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "12 furlongs", "-1MB", "0.5B", "1.0001kB", "1e6"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad size"):
        parse_size(text)


UNITS = {"": 1, "B": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
         "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


@given(st.integers(0, 10**12), st.sampled_from(sorted(UNITS)))
def test_parse_size_round_trips_each_unit(n: int, unit: str) -> None:
    assert parse_size(f"{n}{unit}") == n * UNITS[unit]


@given(st.integers(1, 10**12))
def test_duration_text_reads_back(ms: int) -> None:
    seconds = ms / 1000
    text = duration_text(seconds)
    assert parse_duration(text) == seconds
    assert duration_text(86400.0) == "1d" and duration_text(0.05) == "50ms" and duration_text(90.0) == "90s"


@given(st.integers(0, 2**60))
def test_size_text_reads_back(size: int) -> None:
    assert parse_size(size_text(size)) == size
    assert size_text(8 * 1024**2) == "8MiB" and size_text(1000) == "1000B"


@pytest.mark.parametrize("bind", [("127.0.0.1", 8080), ("::1", 9464), ("localhost", 1)])
def test_bind_text_reads_back(bind: tuple[str, int]) -> None:
    assert parse_bind(bind_text(bind)) == bind


def test_sqlite_absolute() -> None:
    assert sqlite_absolute("sqlite:///jobs.db", "/etc/burrow") == "sqlite:////etc/burrow/jobs.db"
    assert sqlite_absolute("sqlite+pysqlite:///../x/jobs.db?timeout=5", "/etc/burrow") == "sqlite+pysqlite:////etc/x/jobs.db?timeout=5"
    for unchanged in ("sqlite:////abs/jobs.db", "sqlite:///:memory:", "sqlite://", "postgresql://u:p@h/db", "nonsense"):
        assert sqlite_absolute(unchanged, "/etc/burrow") == unchanged
    assert shown_dsn("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
