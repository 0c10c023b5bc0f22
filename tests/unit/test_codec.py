"""burrow.codec: typed values survive encode -> bytes -> decode unchanged.

Properties over generated values of every kind the design promises (64-bit ints,
finite floats, text, bools, None, lists, dicts, aware datetimes, enums, nested
dataclasses, TypedDict), the refusals (NaN, out-of-range ints, naive datetimes),
decode failures as permanent errors, and results through a ResultTask on SQLite.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import burrow
from burrow import codec
from burrow.job import JobState
from burrow.errors import BurrowError, PayloadDecodeError, PayloadEncodeError, PermanentError
from burrow.queue import JobQueue

# -- types ------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Point(TypedDict):
    x: int
    label: str


@dataclass
class Leaf:
    n: int
    x: float
    s: str
    flag: bool
    nothing: None
    maybe: Optional[int]
    when: dt.datetime
    color: Color
    level: Level


@dataclass
class Tree:
    leaf: Leaf
    leaves: list[Leaf]
    by_name: dict[str, Leaf]
    point: Point
    tags: dict[str, list[int]]
    child: Optional[Leaf] = None
    points: list[Point] = field(default_factory=list)


# -- strategies -------------------------------------------------------------------

ints64 = st.integers(-(2**63), 2**64 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
# orjson refuses lone surrogates (not UTF-8); every other code point is text.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
aware = st.datetimes(timezones=st.one_of(st.just(dt.timezone.utc), offsets))

leaves = st.builds(
    Leaf,
    n=ints64,
    x=finite,
    s=text,
    flag=st.booleans(),
    nothing=st.none(),
    maybe=st.none() | ints64,
    when=aware,
    color=st.sampled_from(Color),
    level=st.sampled_from(Level),
)
points = st.builds(Point, x=ints64, label=text)
trees = st.builds(
    Tree,
    leaf=leaves,
    leaves=st.lists(leaves, max_size=3),
    by_name=st.dictionaries(text, leaves, max_size=3),
    point=points,
    tags=st.dictionaries(text, st.lists(ints64, max_size=4), max_size=3),
    child=st.none() | leaves,
    points=st.lists(points, max_size=3),
)
json_values = st.recursive(
    st.none() | st.booleans() | ints64 | finite | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


def offsets_of(tree: Tree) -> list[dt.timedelta | None]:
    leaves = [tree.leaf, *tree.leaves, *tree.by_name.values(), *([tree.child] if tree.child else [])]
    return [leaf.when.utcoffset() for leaf in leaves]


# -- round trips ------------------------------------------------------------------


@given(trees)
def test_tree_round_trips(tree: Tree) -> None:
    data = codec.encode(tree, Tree)
    assert isinstance(data, bytes)
    back = codec.decode(data, Tree)
    assert back == tree
    assert type(back.leaf.color) is Color and type(back.leaf.level) is Level
    assert offsets_of(back) == offsets_of(tree)


@given(trees)
def test_untyped_encode_decodes_typed(tree: Tree) -> None:
    """``q.enqueue(name, value)`` encodes by the value's own class; the handler decodes by P."""
    assert codec.decode(codec.encode(tree), Tree) == tree


@given(leaves)
def test_leaf_round_trips(leaf: Leaf) -> None:
    assert codec.decode(codec.encode(leaf, Leaf), Leaf) == leaf


@pytest.mark.parametrize(
    ("type_", "strategy"),
    [
        (int, ints64),
        (float, finite),
        (str, text),
        (bool, st.booleans()),
        (type(None), st.none()),
        (list[int], st.lists(ints64)),
        (dict[str, float], st.dictionaries(text, finite)),
        (dt.datetime, aware),
        (Color, st.sampled_from(Color)),
        (Level, st.sampled_from(Level)),
        (Point, points),
        (Optional[Leaf], st.none() | leaves),
        (list[Tree], st.lists(trees, max_size=2)),
    ],
    ids=[
        "int", "float", "str", "bool", "none", "list", "dict", "datetime",
        "enum", "int-enum", "typeddict", "optional", "list-of-dataclass",
    ],  # fmt: skip
)
def test_values_round_trip(type_: Any, strategy: st.SearchStrategy[Any]) -> None:
    @given(strategy)
    def check(value: Any) -> None:
        back = codec.decode(codec.encode(value, type_), type_)
        assert back == value
        assert type(back) is type(value)
        if isinstance(value, dt.datetime):
            assert back.utcoffset() == value.utcoffset()

    check()


@given(json_values)
def test_plain_json_round_trips(value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value
    assert codec.decode(codec.encode(value, Any), Any) == value


# -- refusals ---------------------------------------------------------------------


@given(leaves, st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_floats_are_refused(leaf: Leaf, bad: float) -> None:
    leaf.x = bad
    with pytest.raises(PayloadEncodeError):
        codec.encode(leaf, Leaf)
    with pytest.raises(PayloadEncodeError):
        codec.encode({"nested": [leaf.n, bad]})


@given(leaves, st.integers(2**64, 2**200) | st.integers(-(2**200), -(2**63) - 1))
def test_ints_outside_64_bits_are_refused(leaf: Leaf, big: int) -> None:
    leaf.n = big
    with pytest.raises(PayloadEncodeError):
        codec.encode(leaf, Leaf)
    with pytest.raises(PayloadEncodeError):
        codec.encode([big])


@given(leaves, st.datetimes())
def test_naive_datetimes_are_refused(leaf: Leaf, naive: dt.datetime) -> None:
    leaf.when = naive
    with pytest.raises(PayloadEncodeError, match="naive"):
        codec.encode(leaf, Leaf)
    with pytest.raises(PayloadEncodeError, match="naive"):
        codec.encode({"at": [naive]})
    with pytest.raises(PayloadEncodeError, match="naive"):
        codec.encode(naive, dt.datetime)


def test_unencodable_objects_are_refused() -> None:
    for value in (object(), "\ud800", {"k": object()}, [1, object()]):
        with pytest.raises(PayloadEncodeError) as raised:
            codec.encode(value)
        assert isinstance(raised.value, BurrowError)


# -- decode failures --------------------------------------------------------------

LEAF_JSON = {
    "n": 1,
    "x": 1.5,
    "s": "s",
    "flag": True,
    "nothing": None,
    "maybe": None,
    "when": "2030-01-01T00:00:00+00:00",
    "color": "red",
    "level": 1,
}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2",
        b"null",
        b"[]",
        b'"a string"',
        b'{"n": 1}',
        codec.encode({**LEAF_JSON, "n": "one"}),
        codec.encode({**LEAF_JSON, "color": "purple"}),
        codec.encode({**LEAF_JSON, "level": 7}),
        codec.encode({**LEAF_JSON, "when": "2030-01-01T00:00:00"}),
        codec.encode({**LEAF_JSON, "when": "yesterday"}),
        codec.encode({k: v for k, v in LEAF_JSON.items() if k != "when"}),
        b"\xff\xfe",
    ],
)
def test_bad_payloads_raise_permanent_decode_errors(data: bytes) -> None:
    with pytest.raises(PayloadDecodeError) as raised:
        codec.decode(data, Leaf)
    assert isinstance(raised.value, PermanentError)
    assert isinstance(raised.value, BurrowError)
    assert "cannot decode payload into Leaf" in str(raised.value)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("flag", "false", "bool"),  # bool("false") would be True
        ("flag", 1, "bool"),
        ("n", 3.7, "int"),  # int(3.7) would be 3
        ("n", "3", "int"),
        ("n", True, "int"),
        ("x", "1.5", "float"),
        ("x", False, "float"),
        ("s", 5, "str"),  # str(5) would be "5"
    ],
)
def test_scalars_of_the_wrong_json_type_are_refused_not_converted(field: str, value: object, expected: str) -> None:
    """A payload written with the wrong type must fail its job with the field named,
    not run with a value nobody sent."""
    found = "bool" if isinstance(value, bool) else type(value).__name__
    with pytest.raises(PayloadDecodeError, match=rf"expected {expected}, got {found} @ \$\.{field}"):
        codec.decode(codec.encode({**LEAF_JSON, field: value}), Leaf)


SECRET = "4111-1111-1111-1111"


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        (int, SECRET, "expected int, got str"),
        (float, SECRET, "expected float, got str"),
        (bool, SECRET, "expected bool, got str"),
        (str, 4111111111111111, "expected str, got int"),
        (type(None), SECRET, "expected null, got str"),
        (Color, SECRET, "invalid value for type, expected Color"),
        (Level, 4111111111111111, "invalid value for type, expected Level"),
        (dt.datetime, SECRET, "expected an ISO 8601 datetime, got a str that is not one"),
        (dt.datetime, "2030-01-01T12:00:00", "naive datetime: burrow needs timezone-aware datetimes"),
        (list[int], [1, SECRET], "expected int, got str @ $[1]"),
        (Leaf, {**LEAF_JSON, "n": SECRET, "color": SECRET}, "expected int, got str @ $.n"),
    ],
)
def test_a_decode_error_names_types_never_the_value(type_: Any, value: object, expected: str) -> None:
    """The error goes to last_error and the logs; a payload may hold secrets."""
    with pytest.raises(PayloadDecodeError) as raised:
        codec.decode(codec.encode(value), type_)
    message = str(raised.value)
    assert expected in message
    for shown in (SECRET, "4111", "2030"):
        assert shown not in message, message


def test_an_integer_is_a_float() -> None:
    assert codec.decode(codec.encode({**LEAF_JSON, "x": 2}), Leaf).x == 2.0


def test_good_leaf_json_decodes() -> None:
    leaf = codec.decode(codec.encode(LEAF_JSON), Leaf)
    assert leaf.when == dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    assert leaf.color is Color.RED and leaf.level is Level.LOW


@given(st.binary(max_size=64) | json_values.map(codec.encode))
def test_any_bytes_decode_or_raise_payload_decode_error(data: bytes) -> None:
    for type_ in (Leaf, Tree, list[int], dt.datetime, Color, Point):
        try:
            codec.decode(data, type_)
        except PayloadDecodeError:
            pass


def test_naive_stored_datetime_is_a_decode_error() -> None:
    with pytest.raises(PayloadDecodeError, match="naive"):
        codec.decode(b'"2030-01-01T12:00:00"', dt.datetime)


# -- results through a ResultTask (SQLite, drained in-process) --------------------


def echo(p: Tree) -> Tree:
    return p


def leaves_of(p: Tree) -> list[Leaf]:
    return p.leaves


def not_a_number(p: Leaf) -> float:
    return math.nan


echo_task = burrow.define_result_task("codec.echo", echo)
leaves_task = burrow.define_result_task("codec.leaves", leaves_of)
nan_task = burrow.define_result_task("codec.nan", not_a_number, burrow.with_max_retries(0))
nan_retried_task = burrow.define_result_task("codec.nan_retried", not_a_number, burrow.with_max_retries(3))


@pytest.fixture(scope="module")
def sqlite_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobQueue]:
    path: Path = tmp_path_factory.mktemp("codec") / "jobs.db"
    with burrow.connect(f"sqlite:///{path}") as q:
        for task in (echo_task, leaves_task, nan_task, nan_retried_task):
            task.register(q)
        yield q


@settings(max_examples=40)
@given(trees)
def test_results_round_trip_through_a_result_task(sqlite_queue: JobQueue, tree: Tree) -> None:
    echo_id = echo_task.enqueue(sqlite_queue, tree)
    leaves_id = leaves_task.enqueue(sqlite_queue, tree)
    assert sqlite_queue.drain() == 2
    back = echo_task.result(sqlite_queue, echo_id)
    assert back == tree
    assert offsets_of(back) == offsets_of(tree)
    assert leaves_task.result(sqlite_queue, leaves_id) == tree.leaves
    assert sqlite_queue.result(echo_id) == codec.encode(tree, Tree)


def test_unencodable_result_fails_the_job(sqlite_queue: JobQueue) -> None:
    leaf = Leaf(1, 1.0, "s", True, None, None, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), Color.RED, Level.LOW)
    job_id = nan_task.enqueue(sqlite_queue, leaf)
    assert sqlite_queue.drain() == 1
    info = sqlite_queue.job(job_id)
    assert info.state is JobState.FAILED
    assert info.last_error is not None and info.last_error.startswith("ResultEncodeError")
    with pytest.raises(burrow.errors.JobFailed):
        nan_task.result(sqlite_queue, job_id)


def test_an_unencodable_result_is_not_retried(sqlite_queue: JobQueue) -> None:
    """It would not encode on the next attempt either: failed at once, retries left or not."""
    leaf = Leaf(1, 1.0, "s", True, None, None, dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), Color.RED, Level.LOW)
    job_id = nan_retried_task.enqueue(sqlite_queue, leaf)
    assert sqlite_queue.drain() == 1
    info = sqlite_queue.job(job_id)
    assert (info.state, info.attempts) == (JobState.FAILED, 1)
    assert [h.event for h in sqlite_queue.history(job_id)] == ["failed"]
    assert issubclass(burrow.errors.ResultEncodeError, PermanentError)
