"""burrow.django.results: result ids, the error of an attempt, the attempts of a job."""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip("django")

from burrow.backends.records import HistoryEntry, HistoryEvent  # noqa: E402
from burrow.django import results  # noqa: E402
from burrow.job import JobState  # noqa: E402


def test_result_ids() -> None:
    nonce = results.new_nonce()
    assert results.parse_result_id(results.result_id(42, nonce)) == (42, nonce)
    assert results.new_nonce() != nonce
    for bad in [None, 42, "", "42", "42-", "-" + nonce, f"0-{nonce}", f"042-{nonce}", f"42-{nonce.upper()}", f"42-{nonce}0"]:
        assert results.parse_result_id(bad) is None, bad


def test_payload_round_trip_and_foreign_payloads() -> None:
    payload = results.encode_payload("0" * 16, "default", [1, "a"], {"k": None})
    assert results.decode_payload(payload) == {
        "django_task": 1, "nonce": "0" * 16, "backend": "default", "args": [1, "a"], "kwargs": {"k": None},
    }
    for other in [b"", b"not json", b"[1]", b'{"month": 3}', b'{"django_task": 2}']:
        assert results.decode_payload(other) is None


def test_an_attempts_error_names_the_exception_class_from_the_note() -> None:
    text = (
        "Boom: it broke\nTraceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
        "shop.errors.Boom: it broke\n" + results.NOTE_PREFIX + "shop.errors.Boom\n"
    )
    error = results.task_error(text)
    assert error.exception_class_path == "shop.errors.Boom"
    assert results.NOTE_PREFIX not in error.traceback and "shop.errors.Boom: it broke" in error.traceback
    assert results.task_error("lease expired: ...").exception_class_path == results.OTHER_CLASS


def _entry(attempt: int, event: HistoryEvent, pid: int) -> HistoryEntry:
    return HistoryEntry(1, attempt, event, f"E{attempt}", dt.datetime.now(dt.UTC), "host", pid, 0.1)


def test_attempts_start_over_after_an_operator_retry() -> None:
    history = [
        _entry(1, HistoryEvent.FAILED, 10),
        _entry(1, HistoryEvent.REQUEUED, 0),
        _entry(1, HistoryEvent.RETRIED, 11),
        _entry(2, HistoryEvent.LEASE_EXPIRED, 12),
    ]
    errors, worker_ids = results.attempts_of(JobState.RUNNING, 3, "host:13:worker:ab/2", history)
    assert [e.traceback for e in errors] == ["E1", "E2"]
    assert worker_ids == ["host:11", "host:12", "host:13"]
    errors, worker_ids = results.attempts_of(JobState.CANCELLED, 0, None, [])
    assert [e.exception_class_path for e in errors] == [results.CANCELLED_CLASS] and worker_ids == []
