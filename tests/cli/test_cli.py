"""The ``burrow`` command as an operator runs it: real processes against real databases.

Jobs are put in each state through the Python API in this process; the command is
then run as ``python -m burrow.cli`` and its output parsed. A process start costs
~0.3 s, so each test groups its checks, runs independent commands side by side, and
checks that do not depend on the database (bad values, usage) run on SQLite only.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import burrow
from burrow.job import FIELDS, JobInfo, JobState, Shown
from burrow.backends.records import ClaimRequest
from burrow.backends.migrations import LATEST_VERSION
from burrow.queue import JobQueue
from tests.conftest import Database
from tests.supervisor.helpers import run_cli, write_config

CLI = [sys.executable, "-m", "burrow.cli"]
UNREACHABLE = "postgresql://postgres:s3cret@127.0.0.1:1/x"
UTC = dt.timezone.utc
# jobs list --json: every JobInfo field but the stored bytes, in JobInfo's order.
LIST_KEYS = [f.name for f in FIELDS if f.shown is not Shown.BYTES]
# jobs show --json: every JobInfo field, in order, the stored bytes each with its encoding.
SHOW_KEYS = [
    *(key for f in FIELDS for key in ((f.name, f"{f.name}_encoding") if f.shown is Shown.BYTES else (f.name,))),
    "history",
]
TIME_KEYS = ("run_at", "created_at", "started_at", "finished_at", "lease_expires_at", "cancel_requested_at")
FIRST_RELEASE = Path(__file__).parents[1] / "backends" / "data"  # a database as the first release wrote it
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)

Done = subprocess.CompletedProcess[str]


# -- running the command ----------------------------------------------------------


def where(database: Database) -> list[str]:
    """The options that name ``database`` on a command line."""
    return ["--dsn", database.dsn, *(["--schema", database.schema] if database.schema else [])]


def burrow_cli(*args: str, env: Mapping[str, str] | None = None) -> Done:
    """A fixed, wide $COLUMNS: tables are cut to the terminal's width."""
    return run_cli([*CLI, *args], timeout=30, env={"COLUMNS": "200", **(env or {})})


def side_by_side(*commands: Sequence[str]) -> list[Done]:
    """Independent commands at once: process starts overlap."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: burrow_cli(*args), commands))


def ok(database: Database, *args: str) -> str:
    return output(burrow_cli(*args, *where(database)))


def output(done: Done) -> str:
    assert (done.returncode, done.stderr) == (0, ""), (done.args, done.stderr)
    return done.stdout


def as_json(database: Database, *args: str) -> Any:
    return json.loads(ok(database, *args, "--json"))


def one_line(done: Done, code: int) -> str:
    """The one stderr line of a command that must exit ``code`` and print nothing else."""
    assert done.returncode == code, (done.args, done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("burrow: "), done.stderr
    assert done.stdout == "", done.stdout
    return lines[0]


def refusals(code: int, cases: Sequence[tuple[Sequence[str], str]]) -> None:
    """Each command exits ``code`` with one line that says what the case names."""
    for done, (args, named) in zip(side_by_side(*(args for args, _ in cases)), cases):
        line = one_line(done, code)
        assert named in line, (args, line)
        assert "s3cret" not in line


# -- jobs in every state ------------------------------------------------------------


def _fail(data: bytes) -> None:
    raise ValueError("boom\nthe detail")


@dataclass
class Jobs:
    q: JobQueue
    succeeded: int
    failed: int
    running: int
    queued: int
    cancelled: int
    raw: int  # succeeded, with a payload and a result that are not JSON


@pytest.fixture
def jobs(database: Database) -> Iterator[Jobs]:
    q = database.connect()
    q.handle("ok.task", lambda data: burrow.capture_result(b'{"sum": 3}'))
    q.handle("bad.task", _fail, burrow.with_max_retries(0))
    q.handle("raw.task", lambda data: burrow.capture_result(b"\xfe\xff"))
    succeeded = q.enqueue("ok.task", {"a": 1, "b": ["x", "y"]}, priority=5)
    failed = q.enqueue("bad.task", {"n": 1})
    raw = q.enqueue("raw.task", b"\x00\xffraw")
    cancelled = q.enqueue("other.task", {"n": 2})
    assert q.cancel(cancelled)
    queued = q.enqueue("other.task", {"n": 3}, run_at=dt.datetime.now(UTC) + dt.timedelta(days=1))
    assert q.drain() == 3
    assert q.retry(failed) and q.drain() == 1  # its history: failed, requeued, failed
    running = q.enqueue("slow.task", {"n": 4}, unique_key="slow:4")
    [claimed] = q.backend.claim(ClaimRequest(["slow.task"], 1, "test:1:worker:x", 30))
    assert claimed.id == running
    yield Jobs(q, succeeded, failed, running, queued, cancelled, raw)
    q.close()


def expected(job: JobInfo) -> dict[str, Any]:
    """What --json must say of ``job`` (every field but the stored bytes), times parsed back to datetimes."""
    values = {key: getattr(job, key) for key in LIST_KEYS}
    jobs = {f.name: list(getattr(job, f.name)) for f in FIELDS if f.shown is Shown.JOBS}  # JSON arrays
    return {**values, **jobs, "state": job.state.value}


def parsed(item: dict[str, Any], keys: Sequence[str] = TIME_KEYS) -> dict[str, Any]:
    """``item`` with its timestamps as datetimes; each must be ISO 8601 in UTC."""
    out = dict(item)
    for key in keys:
        if out[key] is not None:
            assert out[key].endswith("+00:00"), out[key]
            out[key] = dt.datetime.fromisoformat(out[key])
    return out


def ids(done: Done) -> list[int]:
    return [item["id"] for item in json.loads(output(done))]


# -- reading ------------------------------------------------------------------------


def test_jobs_list_as_json_and_as_a_table(database: Database, jobs: Jobs) -> None:
    q, dsn = jobs.q, where(database)
    listing, by_states, by_tasks, page, table = side_by_side(
        ["jobs", "list", "--json", *dsn],
        ["jobs", "list", "--json", "--state", "failed,cancelled", "--state", "running", *dsn],
        ["jobs", "list", "--json", "--task", "other.task,ok.task", "--task", "bad.task", "--state", "queued,succeeded",
         *dsn],  # fmt: skip
        ["jobs", "list", "--json", "--limit", "2", "--before", str(jobs.cancelled), *dsn],
        ["jobs", "list", "--state", "running,failed", "--limit", "2", *dsn],
    )
    listed = json.loads(output(listing))
    every = [jobs.running, jobs.queued, jobs.cancelled, jobs.raw, jobs.failed, jobs.succeeded]
    assert [item["id"] for item in listed] == sorted(every, reverse=True)
    for item in listed:
        assert list(item) == LIST_KEYS
        assert parsed(item) == expected(q.job(item["id"]))
    failed = next(item for item in listed if item["id"] == jobs.failed)
    assert failed["state"] == "failed" and failed["last_error"].startswith("ValueError: boom\nthe detail\nTraceback")
    assert failed["finished_at"] is not None and failed["attempts"] == 1 and failed["max_retries"] == 0
    queued = next(item for item in listed if item["id"] == jobs.queued)
    assert queued["started_at"] is None and queued["finished_at"] is None and queued["last_error"] is None

    # Filters repeat or take commas; paging goes on from --before.
    assert ids(by_states) == sorted([jobs.running, jobs.cancelled, jobs.failed], reverse=True)
    assert ids(by_tasks) == [jobs.queued, jobs.succeeded]
    assert ids(page) == [jobs.raw, jobs.failed]

    lines = output(table).splitlines()
    assert lines[0].split() == ["id", "task", "state", "priority", "attempts", "run", "at", "finished", "at", "error"]
    running, failed_row = lines[1], lines[2]
    assert running.split()[:5] == [str(jobs.running), "slow.task", "running", "0", "1/4"]
    assert running.split()[5:] == [*_when(q.job(jobs.running).run_at), "-", "-"]
    assert failed_row.split()[:5] == [str(jobs.failed), "bad.task", "failed", "0", "1/1"]
    assert failed_row[lines[0].index("error") :] == "ValueError: boom"  # the error's first line, in its column
    assert lines[3:] == [f"(older jobs: --before {jobs.failed})"]


def _when(at: dt.datetime) -> list[str]:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ").split()


def test_jobs_show_as_json_and_as_a_page(database: Database, jobs: Jobs) -> None:
    q, dsn = jobs.q, where(database)
    failed, succeeded, raw, failed_page, raw_page, running_page = side_by_side(
        *(["jobs", "show", str(i), "--json", *dsn] for i in (jobs.failed, jobs.succeeded, jobs.raw)),
        *(["jobs", "show", str(i), *dsn] for i in (jobs.failed, jobs.raw, jobs.running)),
    )
    shown = json.loads(output(failed))
    assert list(shown) == SHOW_KEYS
    # The fields `jobs show` once left out are among them.
    assert {"queue", "unique_key", "snoozes", "cancel_requested_at", "owner", "lease_expires_at"} <= set(shown)
    assert parsed({k: shown[k] for k in LIST_KEYS}) == expected(q.job(jobs.failed))
    assert (shown["payload"], shown["payload_encoding"]) == ({"n": 1}, "json")
    assert (shown["result"], shown["result_encoding"]) == (None, None)
    history = [parsed(entry, ["at"]) for entry in shown["history"]]
    assert [(h["attempt"], h["event"]) for h in history] == [(1, "failed"), (1, "requeued"), (1, "failed")]
    for entry, stored in zip(history, q.history(jobs.failed), strict=True):
        assert entry == {
            "attempt": stored.attempt, "event": stored.event.value, "error": stored.error, "at": stored.at,
            "host": stored.host, "pid": stored.pid, "duration_s": stored.duration_s,
        }  # fmt: skip
    assert history[0]["error"].startswith("ValueError: boom") and history[0]["duration_s"] >= 0

    shown = json.loads(output(succeeded))
    assert (shown["payload"], shown["result"], shown["priority"]) == ({"a": 1, "b": ["x", "y"]}, {"sum": 3}, 5)
    assert shown["history"] == [] and (shown["payload_encoding"], shown["result_encoding"]) == ("json", "json")
    shown = json.loads(output(raw))
    assert (shown["payload_encoding"], shown["result_encoding"]) == ("base64", "base64")
    assert base64.b64decode(shown["payload"]) == b"\x00\xffraw" and base64.b64decode(shown["result"]) == b"\xfe\xff"

    page = output(failed_page)
    assert page.startswith(f"job {jobs.failed}: bad.task\n")
    for line in ["  state          failed", "  attempts       1 of at most 1 (max_retries 0)", "  snoozes        0",
                 "  unique key     -", "payload:", '    "n": 1',
                 "result: none", "last error:", "  ValueError: boom", "  the detail", "history:"]:  # fmt: skip
        assert line in page.splitlines(), line
    assert "\n  Traceback (most recent call last):\n" in page  # the whole traceback, indented
    history_rows = page.split("history:\n")[1].splitlines()
    assert history_rows[0].split() == ["attempt", "event", "at", "host", "pid", "duration", "error"]
    assert [row.split()[:2] for row in history_rows[1:]] == [["1", "failed"], ["1", "requeued"], ["1", "failed"]]
    assert history_rows[1].endswith("  ValueError: boom")
    page = output(raw_page)
    assert "payload:\n  (not UTF-8 JSON; 5 bytes, escaped)\n  b'\\x00\\xffraw'\n" in page
    assert "result:\n  (not UTF-8 JSON; 2 bytes, escaped)\n  b'\\xfe\\xff'\n" in page and "history: none" in page
    page = output(running_page)
    assert "  owner          test:1:worker:x\n" in page and "  unique key     slow:4\n" in page
    assert "  queue          default\n" in page and "  cancel request -\n" in page


# -- acting ---------------------------------------------------------------------------


def test_retry_cancel_delete_and_what_does_not_apply(database: Database, jobs: Jobs) -> None:
    q, dsn = jobs.q, where(database)
    # Exit 1, one line saying which job and why; nothing changes.
    refusals(1, [
        (["jobs", "retry", str(jobs.running), *dsn], f"job {jobs.running} (running): only a failed or cancelled job"),
        (["jobs", "cancel", str(jobs.succeeded), *dsn], f"job {jobs.succeeded} (succeeded): a finished job cannot be"),
        (["jobs", "delete", str(jobs.running), *dsn], f"job {jobs.running} (running): a running job cannot be deleted"),
        (["jobs", "delete", "999999", *dsn], "no job with id 999999"),
    ])  # fmt: skip
    assert q.job(jobs.running).state is JobState.RUNNING and q.job(jobs.succeeded).state is JobState.SUCCEEDED

    retried, cancelled, deleted = side_by_side(
        ["jobs", "retry", str(jobs.failed), *dsn],
        ["jobs", "cancel", str(jobs.queued), *dsn],
        ["jobs", "delete", str(jobs.succeeded), *dsn],
    )
    assert output(retried) == f"retried job {jobs.failed}\n"
    job = q.job(jobs.failed)
    assert (job.state, job.attempts, job.last_error) == (JobState.QUEUED, 0, None)
    assert output(cancelled) == f"cancelled job {jobs.queued}\n"
    assert q.job(jobs.queued).state is JobState.CANCELLED
    assert output(deleted) == f"deleted job {jobs.succeeded}\n"
    assert [j.id for j in q.jobs(task="ok.task")] == []

    # In bulk: every cancelled job of the tasks named.
    extra = q.enqueue("raw.task", {"n": 5})
    q.cancel(extra)
    assert ok(database, "jobs", "retry", "--state", "cancelled", "--task", "ok.task,other.task") == "retried 2 jobs\n"
    assert {q.job(i).state for i in (jobs.cancelled, jobs.queued)} == {JobState.QUEUED}
    assert q.job(extra).state is JobState.CANCELLED


@sqlite_only
def test_bad_values_usage_and_refusals_that_do_not_depend_on_the_database(database: Database) -> None:
    """Exit 2 for values checked before or by the API, 1 for unknown ids: the same on every backend."""
    database.connect().close()  # migrated, empty
    dsn = where(database)
    refusals(2, [
        (["enqueue", "t", "{not json", *dsn], "payload '{not json' is not JSON"),
        (["enqueue", "t", "NaN", *dsn], "payload 'NaN' is not JSON"),
        (["enqueue", "t", "{}", "--run-at", "2030-01-02T03:04", *dsn], "--run-at '2030-01-02T03:04' has no timezone"),
        (["enqueue", "t", "{}", "--run-at", "tomorrow", *dsn], "--run-at 'tomorrow' is not an ISO 8601 time"),
        (["enqueue", "t", "{}", "--priority", str(2**40), *dsn], "priority"),  # the API's checks, one line too
        (["enqueue", "t", "{}", "--queue", "a b", *dsn], "invalid queue name 'a b'"),
        (["enqueue", "t", "{}", "--delay", "soon", *dsn], "--delay 'soon': bad duration"),
        (["enqueue", "t", "{}", "--unique-key", "k" * 201, *dsn], "a unique key must be a string of 1 to 200"),
        (["prune", "--state", "succeeded,gone", *dsn], "unknown job state 'gone'"),
        (["jobs", "retry", *dsn], "jobs retry takes a job ID or --state"),
        (["jobs", "retry", "1", "--task", "t", *dsn], "jobs retry ID takes no --task"),
        (["prune", "--older-than=-1d", *dsn], "--older-than '-1d' is not an age"),
    ])  # fmt: skip
    refusals(1, [(["jobs", action, "999999", *dsn], "no job with id 999999") for action in ("show", "retry", "cancel")])
    assert "invalid choice: 'job'" in burrow_cli("job", "list").stderr  # argparse's own: exit 2 too
    # Options before the command: said plainly, with the line as it should be.
    misplaced, no_command, version, usage = side_by_side(
        ["-c", "conf/jobs.toml", "jobs", "list"], ["--dsn", "x"], ["--version"], ["--help"]
    )
    assert one_line(misplaced, 2) == "burrow: options go after the command's name: burrow jobs list -c conf/jobs.toml"
    named_jobs = burrow_cli("-c", "jobs", "--json", "jobs", "list")
    assert one_line(named_jobs, 2) == "burrow: options go after the command's name: burrow jobs list -c jobs --json"
    assert "options go after the command's name: burrow COMMAND --dsn x (commands: admin, " in one_line(no_command, 2)
    assert version.returncode == 0 and version.stdout == f"burrow {burrow.__version__} (burrow-jobs)\n"
    assert "\n    admin " in usage.stdout and "\n    supervisor" in usage.stdout
    # Errors say what failed in the reader's words, not a method's name.
    with database.connect() as q:
        with pytest.raises(burrow.errors.BurrowError, match="only failed or cancelled jobs can be retried, not state 'queued'"):
            q.retry_all("queued")
    assert ok(database, "jobs", "list") == "no jobs\n"

    # Tables fit the terminal: long cells and the error column are cut, visibly.
    with database.connect() as q:
        q.handle("t" * 60, _fail, burrow.with_max_retries(0))
        q.enqueue("t" * 60, {})
        q.drain()
    lines = output(burrow_cli("jobs", "list", *dsn, env={"COLUMNS": "90"})).splitlines()
    assert max(len(line) for line in lines) == 90 and lines[1].endswith("...")
    assert lines[1].split()[1] == "t" * 45 + "..."


def test_enqueue_migrates_and_migrate_says_what_it_did(database: Database) -> None:
    """A fresh database: enqueue migrates it as burrow.connect does."""
    dsn = where(database)
    job_id = int(ok(database, "enqueue", "reports.daily", '{"day": "2030-01-02", "n": [1, 2]}',
                    "--priority", "7", "--run-at", "2030-01-02T03:04:05+02:00", "--max-retries", "2"))  # fmt: skip
    again, migrated = side_by_side(["enqueue", "reports.daily", '"just a string"', *dsn], ["migrate", *dsn])
    assert int(output(again)) == job_id + 1
    assert output(migrated) == f"already at version {LATEST_VERSION}\n"
    with database.connect() as q:
        job = q.job(job_id)
        assert (job.task, job.priority, job.max_retries, job.state) == ("reports.daily", 7, 2, JobState.QUEUED)
        assert job.run_at == dt.datetime(2030, 1, 2, 1, 4, 5, tzinfo=UTC)
        assert json.loads(job.payload) == {"day": "2030-01-02", "n": [1, 2]}
        assert q.job(job_id + 1).payload == b'"just a string"'


def test_enqueue_takes_every_option_of_the_api(database: Database) -> None:
    """A job enqueued from the shell for a task that runs in another pool's queue lands
    in that queue: --queue, --delay and --unique-key as the API's queue, delay, unique_key."""
    before = dt.datetime.now(UTC)
    first, second = (
        int(ok(database, "enqueue", "reports.build", "{}", "--queue", "reports", "--delay", "30s", "--unique-key", "r1"))
        for _ in range(2)
    )
    assert first == second  # the key is held: the same job
    with database.connect() as q:
        job = q.job(first)
        assert (job.queue, job.unique_key) == ("reports", "r1")
        assert before + dt.timedelta(seconds=29) <= job.run_at <= dt.datetime.now(UTC) + dt.timedelta(seconds=31)


# -- the schema -----------------------------------------------------------------------


def test_a_database_without_the_schema_is_refused_and_left_alone(
    database: Database, tmp_path: Path, postgres_admin: Any
) -> None:
    dsn = where(database)
    migrate = f"burrow migrate {' '.join(dsn)}"  # the hint names the same database
    missing = f"has no burrow tables: run `{migrate}`"
    if database.kind == "sqlite":
        missing = f"does not exist: run `{migrate}` to create it"
    reads = (["jobs", "list"], ["prune"])
    refusals(2, [([*args, *dsn], missing) for args in reads])
    refusals(1, [(["status", "--check", *dsn], f"run `{migrate}`")])  # a probe: unhealthy, not bad input
    if database.kind == "sqlite":
        assert not (tmp_path / "jobs.db").exists(), "a read command created the SQLite file"
    else:
        assert not postgres_admin.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (database.schema,)
        ).fetchall(), "a read command created the schema"
    assert ok(database, "migrate") == f"migrated to version {LATEST_VERSION} (from version 0)\n"
    assert as_json(database, "jobs", "list") == []


@sqlite_only
def test_an_older_schema_is_refused_until_migrated(database: Database) -> None:
    """A first-release database (schema version 1), as that release wrote it."""
    with contextlib.closing(sqlite3.connect(database.dsn.removeprefix("sqlite:///"))) as conn:
        conn.executescript((FIRST_RELEASE / "first_release.sqlite.sql").read_text())
    refusals(2, [(["jobs", "list", *where(database)], f"is at schema version 1, this burrow needs {LATEST_VERSION}")])
    assert ok(database, "migrate") == f"migrated to version {LATEST_VERSION} (from version 1)\n"
    assert as_json(database, "jobs", "list")  # the old jobs, readable now


# -- status and prune ------------------------------------------------------------------


def test_status_and_its_check(database: Database, jobs: Jobs) -> None:
    dsn = where(database)
    done = burrow_cli("status", "--check", "--json", *dsn)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "burrow: unhealthy: no supervisor has sent a heartbeat in the last 30s\n"
    status = json.loads(done.stdout)
    assert list(status) == ["counts", "tasks", "hosts", "processes", "schedules", "queues", "unhandled", "paused_queues"]
    assert status["queues"] == {"default": {"queued": 1, "running": 1}}
    assert status["unhandled"] == {}  # the one queued job is not due
    assert status["counts"] == {"waiting": 0, "queued": 1, "running": 1, "succeeded": 2, "failed": 1, "cancelled": 1}
    zero = {state.value: 0 for state in JobState}
    assert status["tasks"] == {
        "bad.task": {**zero, "failed": 1},
        "ok.task": {**zero, "succeeded": 1},
        "other.task": {**zero, "queued": 1, "cancelled": 1},
        "raw.task": {**zero, "succeeded": 1},
        "slow.task": {**zero, "running": 1},
    }
    assert status["processes"] == [] and status["hosts"] == [] and status["schedules"] == []

    # A supervisor silent for an hour is stale, and a fresh worker is not a supervisor.
    with database.connect(clock=lambda: dt.datetime.now(UTC) - dt.timedelta(hours=1)) as hour_ago:
        hour_ago.backend.register_process("old:1:supervisor:a", "old", 1, "supervisor")
    jobs.q.backend.register_process("web:2:worker:b", "web", 2, "worker")
    assert "unhealthy" in burrow_cli("status", "--check", *dsn).stderr

    jobs.q.backend.register_process("web:3:supervisor:c", "web", 3, "supervisor")
    healthy, page = side_by_side(["status", "--check", "--json", *dsn], ["status", "--check", *dsn])
    processes = {p["owner"]: p for p in json.loads(output(healthy))["processes"]}
    assert set(processes) == {"old:1:supervisor:a", "web:2:worker:b", "web:3:supervisor:c"}
    fresh = parsed(processes["web:3:supervisor:c"], ["started_at", "heartbeat_at"])
    assert list(fresh) == ["owner", "host", "pid", "role", "started_at", "heartbeat_at", "stale"]
    assert (fresh["host"], fresh["pid"], fresh["role"], fresh["stale"]) == ("web", 3, "supervisor", False)
    assert abs(dt.datetime.now(UTC) - fresh["heartbeat_at"]) < dt.timedelta(minutes=1)
    assert processes["old:1:supervisor:a"]["stale"] is True and processes["web:2:worker:b"]["stale"] is False
    # Per host: its supervisors and workers, the age of its newest heartbeat; stale when all its processes are.
    hosts = {h["host"]: h for h in json.loads(output(healthy))["hosts"]}
    assert {h: (v["supervisors"], v["workers"], v["stale"]) for h, v in hosts.items()} == {
        "old": (1, 0, True), "web": (1, 1, False)
    }
    assert hosts["old"]["heartbeat_age_s"] > 3500 and 0 <= hosts["web"]["heartbeat_age_s"] < 60

    lines = output(page).splitlines()
    assert lines[0] == "jobs by state:"
    assert lines[1].split() == ["waiting", "queued", "running", "succeeded", "failed", "cancelled"]
    assert lines[2].split() == ["0", "1", "1", "2", "1", "1"]
    other = next(line for line in lines if line.startswith("  other.task "))
    assert other.split() == ["other.task", "0", "1", "0", "0", "0", "1"]
    old = next(line for line in lines if line.startswith("  old:1:supervisor:a"))
    assert old.split()[1:] == ["old", "1", "supervisor", "60m", "ago", "stale"]
    assert next(line for line in lines if line.startswith("  old ")).split() == ["old", "1", "0", "60m", "ago", "stale"]
    fresh_line = next(line for line in lines if line.startswith("  web:3:supervisor:c"))
    assert fresh_line.split()[1:4] == ["web", "3", "supervisor"] and fresh_line.split()[-2:] == ["ago", "ok"]


def test_status_names_due_jobs_no_supervisor_handles(database: Database, jobs: Jobs) -> None:
    """A job enqueued under a misspelt task name is named, not left to wait in silence."""
    jobs.q.backend.register_process("web:3:supervisor:c", "web", 3, "supervisor")
    jobs.q.backend.register_tasks("web:3:supervisor:c", {"math.add": "{}"})
    jobs.q.enqueue_many("math.ad", [{"a": 1}, {"a": 2}])
    jobs.q.enqueue("math.add", {"a": 1})
    dsn = where(database)
    as_json_done, page = side_by_side(["status", "--json", *dsn], ["status", *dsn])
    assert json.loads(output(as_json_done))["unhandled"] == {"math.ad": 2}
    lines = output(page).splitlines()
    assert lines[0] == "due jobs that no live supervisor handles (they wait until one does):"
    assert lines[2].split() == ["math.ad", "2"]
    assert lines[3:5] == ["", "jobs by state:"]


def test_status_shows_each_periodic_jobs_next_slot(database: Database, jobs: Jobs) -> None:
    clock_now = dt.datetime(2030, 1, 1, 0, 0, 5, tzinfo=UTC)
    with database.connect(clock=lambda: clock_now) as q:
        burrow.periodic("ok.task", {}, every=60, name="minutely").register(q)
        q.enqueue_due_slots()  # a supervisor's first sight of it
    [schedule] = as_json(database, "status")["schedules"]
    assert schedule == {
        "name": "minutely", "task": "ok.task", "rule": "every 60s",
        "last_slot": "2030-01-01T00:00:00+00:00", "next_slot": "2030-01-01T00:01:00+00:00",
    }
    page = output(burrow_cli("status", *where(database)))
    assert "periodic jobs:" in page and "minutely" in page and "2030-01-01 00:01:00Z" in page


def test_prune(database: Database, jobs: Jobs) -> None:
    q, dsn = jobs.q, where(database)
    with database.connect(clock=lambda: dt.datetime.now(UTC) - dt.timedelta(days=10)) as past:
        past.handle("ok.task", lambda data: None)
        old = past.enqueue_many("ok.task", [{"n": i} for i in range(3)])
        old_cancelled = past.enqueue("other.task", {})
        past.cancel(old_cancelled)
        assert past.drain() == 3  # these finished ten days ago

    assert as_json(database, "prune", "--state", "cancelled", "--older-than", "11d") == {"deleted": 0}
    assert as_json(database, "prune", "--state", "cancelled") == {"deleted": 1}  # 7d by default
    assert ok(database, "prune") == "deleted 3 jobs (succeeded, failed, cancelled) that finished more than 7d ago\n"
    left = {j.id for j in q.jobs()}
    assert not left & {*old, old_cancelled}
    assert {jobs.failed, jobs.succeeded, jobs.raw, jobs.cancelled} <= left  # finished just now: kept
    assert as_json(database, "prune", "--older-than", "0s", "--state", "failed,succeeded") == {"deleted": 3}
    assert {j.id for j in q.jobs()} == left - {jobs.failed, jobs.succeeded, jobs.raw}


# -- naming the database ---------------------------------------------------------------


def test_the_database_from_a_config_file_the_environment_or_dsn(database: Database, jobs: Jobs, tmp_path: Path) -> None:
    """--dsn over BURROW_DATABASE_DSN over -c's file; the schema from --schema or the file."""
    every = sorted(j.id for j in jobs.q.jobs())
    schema = ["--schema", database.schema] if database.schema else []

    class Elsewhere:
        dsn = f"sqlite:///{tmp_path / 'elsewhere.db'}"
        schema = None

    config = str(write_config(tmp_path / "jobs.toml", database))
    other = str(write_config(tmp_path / "other.toml", Elsewhere))
    list_json = ["jobs", "list", "--json"]
    from_file, env_over_file, option_over_env = (
        burrow_cli(*list_json, "-c", config),
        burrow_cli(*list_json, "-c", other, *schema, env={"BURROW_DATABASE_DSN": database.dsn}),
        burrow_cli(*list_json, "-c", other, "--dsn", database.dsn, *schema, env={"BURROW_DATABASE_DSN": UNREACHABLE}),
    )
    for done in (from_file, env_over_file, option_over_env):
        assert sorted(ids(done)) == every
    assert not (tmp_path / "elsewhere.db").exists()


def test_no_bad_or_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text(f'[database]\ndsn = "{UNREACHABLE}"\n[supervisor]\nworkerz = 1\n')
    unreachable = "burrow: database postgresql://postgres:***@127.0.0.1:1/x: "
    refusals(2, [
        (["jobs", "list"], "no database named: pass --dsn DSN (and --schema S), set BURROW_DATABASE_DSN, or -c"),
        (["jobs", "list", "--dsn", UNREACHABLE], unreachable),
        (["enqueue", "t", "{}", "--dsn", UNREACHABLE], unreachable),
        (["jobs", "list", "--dsn", "postgresql://u:s3cret@host:port/db"], "not a database URL burrow can read"),
        (["jobs", "list", "-c", str(config)], "[supervisor] workerz: unknown key"),
    ])  # fmt: skip
    refusals(1, [(["status", "--check", "--dsn", UNREACHABLE], unreachable + "postgresql: reading the schema version failed: ")])
    done = burrow_cli("jobs", "list", env={"BURROW_DATABASE_DSN": UNREACHABLE})
    assert one_line(done, 2).startswith(unreachable) and "s3cret" not in done.stderr
    assert not list(tmp_path.glob("*.db"))


def test_burrow_supervisor_still_dispatches(tmp_path: Path) -> None:
    class Sqlite:
        dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
        schema = None

    done = burrow_cli("supervisor", "--check", "-c", str(write_config(tmp_path / "jobs.toml", Sqlite)))
    assert done.returncode == 0, done.stderr
    assert "schema:   does not exist yet" in done.stdout and not (tmp_path / "jobs.db").exists()
