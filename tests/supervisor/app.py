"""The app the supervisor tests run (``apps = ["tests.supervisor.app:app"]``).

Each task makes a worker do one thing a test can observe from outside: leave a
line in a ledger, announce that it is running and wait for a go-ahead, sleep past
its timeout (in a function a stack trace can name, or deaf to SIGTERM), hoard
memory, or report which version of this module it runs (version "broken" fails
its register_jobs).
Handlers coordinate with tests through files, because the test and the worker
are different processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import burrow
from burrow.supervisor.protocol import encode_frame

VERSION_ENV = "BURROW_TEST_APP_VERSION_FILE"
GATE_TIMEOUT_S = 60.0  # a gate nobody opens must not hold a worker forever


def _read_version() -> str:
    path = os.environ.get(VERSION_ENV)
    return Path(path).read_text().strip() if path else "0"


# Read at import time: a SIGHUP reload re-imports this module, so new workers see
# the file's new content and old ones keep the old.
VERSION = _read_version()


@dataclass
class Numbers:
    a: int
    b: int


def square(numbers: Numbers) -> int:
    return numbers.a * numbers.a + numbers.b


async def async_square(numbers: Numbers) -> int:
    await asyncio.sleep(0)
    return numbers.a * numbers.a + numbers.b


@dataclass
class Mark:
    ledger: str
    key: str
    seconds: float = 0.0  # how long the job takes before it records


def record(mark: Mark) -> None:
    """Append "<key> <pid>" to the ledger; O_APPEND keeps lines whole across processes."""
    if mark.seconds:
        time.sleep(mark.seconds)
    fd = os.open(mark.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{mark.key} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@dataclass
class Gate:
    directory: str
    name: str


def block(gate: Gate) -> str:
    """Write "<name>.<attempt>.pid", then wait for "<name>.go" to exist.

    The pid file proves the job is running in that worker, so a test can kill or
    signal at exactly that moment.
    """
    attempt = _announce(gate)
    _wait_to_go(gate)
    return f"{gate.name} done on attempt {attempt}"


def _wait_to_go(gate: Gate) -> None:
    """Until the test writes "<name>.go" (at most GATE_TIMEOUT_S)."""
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not (Path(gate.directory) / f"{gate.name}.go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate.name} was never opened")
        time.sleep(0.01)


def _announce(gate: Gate) -> int:
    """Write "<name>.<attempt>.pid" by a rename, so a test never reads half a pid; the attempt."""
    attempt = burrow.current_job().attempt
    announce = Path(gate.directory) / f"{gate.name}.{attempt}.pid"
    partial = announce.with_suffix(".tmp")
    partial.write_text(str(os.getpid()))
    partial.rename(announce)
    return attempt


def announced(gates: Path, name: str, attempt: int = 1) -> int | None:
    """The pid of the worker running gate ``name`` (``_announce`` wrote it), or None yet."""
    try:
        return int((gates / f"{name}.{attempt}.pid").read_text())
    except FileNotFoundError:
        return None


def _pipes_to_the_supervisor() -> list[int]:
    """This worker's writable pipe descriptors other than stdio: its pipe to the supervisor."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError, ValueError):
            continue
        if fd > 2 and target.startswith("pipe:") and flags & os.O_WRONLY:
            found.append(fd)
    return found


def claim_nothing(gate: Gate) -> str:
    """Report this job's result itself, so that the supervisor holds nothing in flight for
    this worker, then announce a claim of no job at all; hang until killed."""
    job = burrow.current_job()
    result = {"t": "result", "id": job.id, "attempt": job.attempt, "kind": "succeeded", "result": '"reported"'}
    _announce(gate)
    for fd in _pipes_to_the_supervisor():
        os.write(fd, encode_frame(result) + encode_frame({"t": "claimed", "owner": "me", "jobs": []}))
    time.sleep(GATE_TIMEOUT_S)
    return "never"


def slow(seconds: float) -> None:
    time.sleep(seconds)


def stuck_in_a_known_place() -> None:
    """The name the stack recorded in the job's error must show."""
    time.sleep(GATE_TIMEOUT_S)


def stuck(gate: Gate) -> None:
    _announce(gate)
    stuck_in_a_known_place()


def deaf(gate: Gate) -> str:
    """Ignore SIGTERM and hang on the first attempt; succeed on the next."""
    if burrow.current_job().attempt == 1:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _announce(gate)
        time.sleep(GATE_TIMEOUT_S)
    return f"{gate.name} done on attempt {burrow.current_job().attempt}"


_HOARD: list[bytes] = []


def hog(megabytes: int) -> int:
    """Allocate and keep ``megabytes`` of touched memory; returns this worker's pid."""
    _HOARD.append(b"\x01" * (megabytes * 1_000_000))
    return os.getpid()


def version(_: int) -> str:
    return VERSION


def bad_name(_: int) -> None:
    """A PermanentError naming a file whose name is not UTF-8: a lone surrogate in the text."""
    raise burrow.PermanentError("bad name " + os.fsdecode(b"\xff"))


def huge_error(megabytes: int) -> None:
    raise ValueError("x" * (megabytes << 20))


def text_result(size: int) -> str:
    return "x" * size


def binary_result(size: int) -> None:
    """A result that is not UTF-8 (a raw capture, as a handler storing an image would)."""
    burrow.capture_result(b"\xff" * size)


@dataclass
class Span:
    ledger: str
    key: str
    seconds: float


def timed(span: Span) -> None:
    """Append "<key> <start> <end>" (wall-clock seconds) around a sleep: how many ran at once."""
    started = time.time()
    time.sleep(span.seconds)
    fd = os.open(span.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{span.key} {started} {time.time()} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def sleepy(gate: Gate) -> None:
    """Announce, then sleep a minute without ever looking up: only a kill stops it."""
    _announce(gate)
    time.sleep(GATE_TIMEOUT_S)


def polite(gate: Gate) -> str:
    """Announce, then stop as soon as a cancel is asked for: looks every 50 ms."""
    _announce(gate)
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while time.monotonic() < deadline:
        if burrow.current_job().cancel_requested:
            (Path(gate.directory) / f"{gate.name}.saw").touch()
            return "stopped when asked"
        time.sleep(0.05)
    return "never asked"


def progressing(gate: Gate) -> str:
    """Report progress 10,000 times (the last: 0.4, "340 of 850 rows"), announce, then
    wait for the gate: a test reads the progress its supervisor wrote meanwhile."""
    job = burrow.current_job()
    for n in range(10_000):
        job.progress(n / 25_000, f"{n} of 25000")
    job.progress(0.4, "340 of 850 rows")
    _announce(gate)
    _wait_to_go(gate)
    job.progress(1.0)
    return "done"


square_task = burrow.define_result_task("sv.square", square)
async_square_task = burrow.define_result_task("sv.async_square", async_square)
record_task = burrow.define_task("sv.record", record)
block_task = burrow.define_result_task("sv.block", block, burrow.with_max_retries(3))
slow_task = burrow.define_task(
    "sv.slow", slow, burrow.with_timeout(0.5), burrow.with_max_retries(1), burrow.with_backoff(0.05, 0.1)
)
stuck_task = burrow.define_task("sv.stuck", stuck, burrow.with_timeout(0.5), burrow.with_max_retries(0))
deaf_task = burrow.define_result_task(
    "sv.deaf", deaf, burrow.with_timeout(0.5), burrow.with_max_retries(1), burrow.with_backoff(0.05, 0.1)
)
hog_task = burrow.define_result_task("sv.hog", hog)
version_task = burrow.define_result_task("sv.version", version)
bad_name_task = burrow.define_task("sv.bad_name", bad_name, burrow.with_max_retries(2))
huge_error_task = burrow.define_task("sv.huge_error", huge_error, burrow.with_max_retries(0))
text_result_task = burrow.define_result_task("sv.text_result", text_result, burrow.with_max_retries(2))
binary_result_task = burrow.define_task("sv.binary_result", binary_result, burrow.with_max_retries(2))
claim_nothing_task = burrow.define_result_task("sv.claim_nothing", claim_nothing)

bulk_task = burrow.define_task("sv.bulk", timed, burrow.with_queue("bulk"))
mail_task = burrow.define_task("sv.mail", record, burrow.with_queue("mail"))
limited_task = burrow.define_task("sv.limited", timed, burrow.with_concurrency(2))
sleepy_task = burrow.define_task("sv.sleepy", sleepy, burrow.with_max_retries(3))
polite_task = burrow.define_result_task("sv.polite", polite, burrow.with_max_retries(3))
progress_task = burrow.define_result_task("sv.progress", progressing, burrow.with_max_retries(0))

def gather(numbers: Numbers) -> dict[str, int]:
    """A workflow's sink: how many parent results it sees, and their sum."""
    results = burrow.current_job().parent_results
    return {"parents": len(results), "sum": sum(r for r in results.values() if r is not None)}


gather_task = burrow.define_result_task("sv.gather", gather)

TASKS = (
    gather_task,
    progress_task,
    bulk_task,
    mail_task,
    limited_task,
    sleepy_task,
    polite_task,
    square_task,
    async_square_task,
    record_task,
    block_task,
    slow_task,
    stuck_task,
    deaf_task,
    hog_task,
    version_task,
    bad_name_task,
    huge_error_task,
    text_result_task,
    binary_result_task,
    claim_nothing_task,
)


BROKEN = "broken"  # the version whose register_jobs fails as app code can, with no BurrowError


class App:
    def register_jobs(self, q: burrow.Queue) -> None:
        if VERSION == BROKEN:
            settings: dict[str, str] = {}
            settings["queue_name"]  # a KeyError, as a missing setting would raise
        for task in TASKS:
            task.register(q)


app = App()
