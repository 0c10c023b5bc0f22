"""Payloads: typed round trips, unannotated handlers, aware datetimes; payloads
refused before anything is stored (unencodable, over the size cap); and a stored
payload that does not decode into the handler's type."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any, Optional

import pytest

import burrow
from burrow.job import JobState
from burrow.errors import BurrowError, PayloadEncodeError
from burrow.queue import JobQueue
from tests.backends.helpers import ORDER, PDT, Color, Item, Level, Order, Point, drain_all, total_jobs, typed_handler
from tests.conftest import Database


PAYLOAD_CASES = [
    pytest.param(Order, ORDER, id="nested-dataclass"),
    pytest.param(list[Item], [Item("a", 1), Item("b", 2, 0.5)], id="list"),
    pytest.param(dict[str, list[int]], {"a": [1, 2], "b": []}, id="dict"),
    pytest.param(Optional[Item], None, id="optional-none"),
    pytest.param(Optional[Item], Item("x", 3), id="optional-some"),
    pytest.param(dt.datetime, dt.datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=PDT), id="datetime"),
    pytest.param(Color, Color.RED, id="enum"),
    pytest.param(Level, Level.LOW, id="int-enum"),
    pytest.param(Point, {"x": 1, "y": 2}, id="typeddict"),
    pytest.param(Any, {"a": [1, 2.5, None, True, "é\u0000"], "b": {"c": {}}}, id="plain-json"),
    pytest.param(int, 2**64 - 1, id="uint64-max"),
    pytest.param(int, -(2**63), id="int64-min"),
]


@pytest.mark.parametrize(("payload_type", "value"), PAYLOAD_CASES)
def test_typed_payload_round_trips(queue: JobQueue, payload_type: Any, value: Any) -> None:
    received: list[Any] = []
    task = burrow.define_task("typed.roundtrip", typed_handler(payload_type, received))
    task.register(queue)
    job_id = task.enqueue(queue, value)
    assert queue.drain() == 1
    assert received == [value]
    assert type(received[0]) is type(value)
    assert queue.job(job_id).state is JobState.SUCCEEDED


def test_unannotated_handler_receives_plain_json(queue: JobQueue) -> None:
    received = []

    def handler(p):  # noqa: ANN001 - no annotation: P is plain JSON
        received.append(p)

    task = burrow.define_task("plain.json", handler)
    task.register(queue)
    task.enqueue(queue, {"list": [1, "two", 3.5, None], "flag": False})
    queue.enqueue("plain.json", [1, {"k": "v"}])
    assert queue.drain() == 2
    assert received == [{"list": [1, "two", 3.5, None], "flag": False}, [1, {"k": "v"}]]


def test_aware_datetimes_keep_their_offset(queue: JobQueue) -> None:
    received: list[Order] = []
    task = burrow.define_task("typed.order", typed_handler(Order, received))
    task.register(queue)
    task.enqueue(queue, ORDER)
    queue.drain()
    assert received[0].when == ORDER.when
    assert received[0].when.utcoffset() == dt.timedelta(hours=5, minutes=30)


UNENCODABLE = [
    pytest.param(object(), id="object"),
    pytest.param(math.nan, id="nan"),
    pytest.param({"deep": [1, math.inf]}, id="nested-inf"),
    pytest.param(2**64, id="int-over-64-bit"),
    pytest.param(-(2**63) - 1, id="int-under-64-bit"),
    pytest.param(dt.datetime(2030, 1, 1, 12, 0), id="naive-datetime"),
    pytest.param({"when": dt.datetime(2030, 1, 1, 12, 0)}, id="nested-naive-datetime"),
]


@pytest.mark.parametrize("value", UNENCODABLE)
def test_unencodable_payload_stores_nothing(queue: JobQueue, value: Any) -> None:
    with pytest.raises(PayloadEncodeError) as raised:
        queue.enqueue("raw.job", value)
    assert isinstance(raised.value, BurrowError)
    with pytest.raises(PayloadEncodeError):
        queue.enqueue_many("raw.job", [{"ok": 1}, value, {"ok": 2}])
    untyped = burrow.define_task("untyped.job", typed_handler(Any, []))
    with pytest.raises(PayloadEncodeError):
        untyped.enqueue(queue, value)
    with pytest.raises(PayloadEncodeError):
        untyped.enqueue_many(queue, [{"ok": 1}, value])
    assert total_jobs(queue) == 0


def test_unencodable_typed_payload_stores_nothing(queue: JobQueue) -> None:
    task = burrow.define_task("typed.order", typed_handler(Order, []))
    for bad in (
        dataclasses.replace(ORDER, when=dt.datetime(2030, 1, 1)),
        dataclasses.replace(ORDER, items=[Item("nan", 1, math.nan)]),
        dataclasses.replace(ORDER, id=2**70),
    ):
        with pytest.raises(PayloadEncodeError):
            task.enqueue(queue, bad)
        with pytest.raises(PayloadEncodeError):
            task.enqueue_many(queue, [ORDER, bad])
    assert total_jobs(queue) == 0


def test_payload_over_the_size_cap_is_refused(database: Database) -> None:
    with database.connect(max_payload_bytes=100) as q:
        q.enqueue("raw.job", b"x" * 100)
        with pytest.raises(PayloadEncodeError, match="100-byte cap"):
            q.enqueue("raw.job", b"x" * 101)
        assert total_jobs(q) == 1


def test_stored_payload_that_does_not_decode_fails_at_once(queue: JobQueue) -> None:
    received: list[Item] = []
    task = burrow.define_task("typed.item", typed_handler(Item, received), burrow.with_max_retries(3))
    task.register(queue)
    wrong_shape = queue.enqueue("typed.item", {"name": 1})
    not_json = queue.enqueue("typed.item", b"{not json")
    assert drain_all(queue) == 2
    assert received == []
    for job_id in (wrong_shape, not_json):
        info = queue.job(job_id)
        assert info.state is JobState.FAILED
        assert info.attempts == 1
        assert info.max_retries == 3
        assert info.last_error is not None
        assert info.last_error.startswith("PayloadDecodeError: cannot decode payload into Item")
        assert [e.event for e in queue.history(job_id)] == ["failed"]


def test_a_stored_decode_error_is_its_summary_and_fields(queue: JobQueue) -> None:
    """No traceback: the decoder's exception groups and burrow's frames say nothing the
    fields do not; the values never appear."""
    task = burrow.define_task("typed.item", typed_handler(Item, []))
    task.register(queue)
    job_id = queue.enqueue("typed.item", {"name": 1, "qty": "secret-value"})
    assert drain_all(queue) == 1
    error = queue.job(job_id).last_error
    assert error is not None
    assert error.splitlines() == [
        "PayloadDecodeError: cannot decode payload into Item: expected str, got int @ $.name;"
        " expected int, got str @ $.qty",
        "  $.name: expected str, got int",
        "  $.qty: expected int, got str",
    ]
    assert "secret-value" not in error and "Traceback" not in error


def test_typed_enqueue_validates_as_the_worker_decodes(queue: JobQueue) -> None:
    """A value of the wrong type is refused at enqueue by the worker's strict rules, for
    one job, a batch (nothing of it stored) and a typed periodic job; the right ones pass."""
    task = burrow.define_task("typed.item", typed_handler(Item, []))
    with pytest.raises(PayloadEncodeError, match=r"^payload is not a valid Item: \$\.qty: expected int, got str$"):
        task.enqueue(queue, Item("a", "1"))  # type: ignore[arg-type]
    with pytest.raises(PayloadEncodeError, match=r"\$\.name: expected str, got int"):
        task.enqueue_many(queue, [Item("a", 1), Item(2, 1)])  # type: ignore[arg-type]
    with pytest.raises(PayloadEncodeError, match=r"\$\.qty: expected int, got float"):
        burrow.periodic(task, Item("a", 1.5), every=60)  # type: ignore[arg-type]
    assert total_jobs(queue) == 0
    assert task.enqueue_many(queue, [Item("a", 1), Item("b", 2, 0.5)]) and total_jobs(queue) == 2
