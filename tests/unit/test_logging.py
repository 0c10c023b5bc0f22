"""burrow's JSON lines: the fields structlog's own processors wrote, from one processor."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from burrow.logging import configure_logging, utc_stamp_of


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(format="json", level="debug", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def _read(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_its_fields_then_event_level_and_utc_time(lines: io.StringIO) -> None:
    before = dt.datetime.now(dt.UTC)
    structlog.get_logger("app").info("resized", width=640)
    after = dt.datetime.now(dt.UTC)
    [line] = _read(lines)
    assert list(line) == ["width", "event", "level", "timestamp"]
    assert (line["width"], line["event"], line["level"]) == (640, "resized", "info")
    stamp = str(line["timestamp"])
    assert stamp.endswith("Z")
    # to the microsecond, as datetime.isoformat writes it: the clocks may round apart by 1 us
    assert before - dt.timedelta(microseconds=1) <= dt.datetime.fromisoformat(stamp) <= after + dt.timedelta(microseconds=1)


def test_levels_are_named_as_structlog_names_them(lines: io.StringIO) -> None:
    log = structlog.get_logger("app")
    log.debug("d")
    log.warning("w")
    log.warn("old alias")
    log.error("e")
    assert [line["level"] for line in _read(lines)] == ["debug", "warning", "warning", "error"]


def test_an_exception_is_written_with_its_traceback(lines: io.StringIO) -> None:
    log = structlog.get_logger("app")
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("lookup_failed", key="k")
    [line] = _read(lines)
    assert (line["event"], line["level"], line["key"]) == ("lookup_failed", "error", "k")
    assert "exc_info" not in line
    exception = str(line["exception"])
    assert exception.startswith("Traceback (most recent call last):") and exception.endswith("KeyError: 'missing'")


@given(st.lists(st.integers(min_value=0, max_value=4_102_444_800 * 10**6), min_size=1, max_size=20))
def test_the_stamp_reads_as_datetime_writes_it(times: list[int]) -> None:
    """Its date and seconds are kept for the second they name (a list of times crosses
    seconds back and forth); a whole second has no fraction, as in datetime's."""
    for micros in [*times, *(t - t % 10**6 for t in times)]:
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
        assert utc_stamp_of(micros) == when.isoformat().replace("+00:00", "Z")
