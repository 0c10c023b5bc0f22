"""Slot arithmetic: every host computes the same slots, and daylight-saving changes
neither skip a day nor run a fixed-time job twice."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import hypothesis.strategies as st
from hypothesis import given

from burrow.schedule import Cron, Every

UTC = dt.timezone.utc
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
instants = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC))


@given(now=instants, interval=st.integers(1, 86_400 * 7))
def test_every_slots_are_whole_intervals_since_the_epoch(now: dt.datetime, interval: int) -> None:
    rule = Every(float(interval))
    slot = rule.latest(now)
    assert slot <= now < rule.after(slot) == slot + dt.timedelta(seconds=interval)
    assert (slot - dt.datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() % interval == 0
    # Another host, a moment later within the same slot, computes the same slot.
    assert rule.latest(min(now + dt.timedelta(microseconds=1), rule.after(slot) - dt.timedelta(microseconds=1))) == slot


@given(now=instants, expression=st.sampled_from(["*/5 * * * *", "0 3 * * *", "15 */2 * * 1-5", "0 0 1 * *"]))
def test_cron_latest_and_after_bracket_now(now: dt.datetime, expression: str) -> None:
    rule = Cron(expression, "Europe/Berlin")
    slot = rule.latest(now)
    assert slot <= now < rule.after(slot)
    assert rule.latest(slot) == slot
    assert slot.tzinfo is not None and slot.utcoffset() == dt.timedelta(0)


def _local(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold)


def _slots(rule: Cron, start: dt.datetime, n: int) -> list[dt.datetime]:
    slots, slot = [], rule.latest(start)
    for _ in range(n):
        slot = rule.after(slot)
        slots.append(slot.astimezone(BERLIN))
    return slots


def test_a_fixed_time_that_does_not_exist_runs_at_the_first_time_after_it() -> None:
    # 2026-03-29: Berlin's clocks jump from 02:00 to 03:00.
    slots = _slots(Cron("30 2 * * *", "Europe/Berlin"), _local(2026, 3, 28, 12, 0), 3)
    assert [s.replace(tzinfo=None) for s in slots] == [
        dt.datetime(2026, 3, 29, 3, 0), dt.datetime(2026, 3, 30, 2, 30), dt.datetime(2026, 3, 31, 2, 30)
    ]


def test_a_fixed_time_that_happens_twice_runs_once() -> None:
    # 2026-10-25: Berlin's clocks go back from 03:00 to 02:00; 02:30 happens twice.
    rule = Cron("30 2 * * *", "Europe/Berlin")
    slots = _slots(rule, _local(2026, 10, 24, 12, 0), 3)
    assert [s.replace(tzinfo=None) for s in slots] == [
        dt.datetime(2026, 10, 25, 2, 30), dt.datetime(2026, 10, 26, 2, 30), dt.datetime(2026, 10, 27, 2, 30)
    ]
    # Inside the repeated hour the latest slot is still the first 02:30: nothing new is due.
    first = _local(2026, 10, 25, 2, 30).astimezone(UTC)
    assert rule.latest(_local(2026, 10, 25, 2, 45, fold=1).astimezone(UTC)) == first


def test_an_every_hour_expression_follows_real_time_through_the_repeated_hour() -> None:
    slots = _slots(Cron("0 * * * *", "Europe/Berlin"), _local(2026, 10, 25, 0, 30), 4)
    utc = [s.astimezone(UTC) for s in slots]  # same-zone subtraction would count wall-clock time
    gaps = {(b - a).total_seconds() for a, b in zip(utc, utc[1:])}
    assert gaps == {3600.0}  # 01:00, 02:00 (summer), 02:00 (winter), 03:00: an hour apart each


def test_six_fields_count_seconds_first() -> None:
    rule = Cron("*/20 * * * * *")
    slot = rule.latest(dt.datetime(2030, 1, 1, 0, 0, 45, tzinfo=UTC))
    assert slot == dt.datetime(2030, 1, 1, 0, 0, 40, tzinfo=UTC)
    assert rule.after(slot) == dt.datetime(2030, 1, 1, 0, 1, 0, tzinfo=UTC)
