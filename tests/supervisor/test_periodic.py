"""Periodic jobs through real supervisors: two supervisors on one database enqueue each
slot once, with none missing while they run."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from pathlib import Path

from burrow.job import JobState
from tests.conftest import Database
from tests.supervisor.helpers import Launcher, run_cli, write_config

RUN_S = 10


def _with_schedule(config: Path, ledger: Path) -> Path:
    """The config plus a [[schedule]] of sv.record every second (JSON strings are TOML strings)."""
    payload = "{ " + f"ledger = {json.dumps(str(ledger))}, key = \"tick\"" + " }"
    config.write_text(
        config.read_text() + f'\n[[schedule]]\ntask = "sv.record"\nevery = "1s"\nname = "ticker"\npayload = {payload}\n'
    )
    return config


def test_two_supervisors_enqueue_each_slot_once(database: Database, launcher: Launcher, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    config = _with_schedule(write_config(tmp_path / "jobs.toml", database, workers=1), ledger)
    checked = run_cli([sys.executable, "-m", "burrow.supervisor", "--check", "-c", str(config)])
    assert checked.returncode == 0, checked.stderr
    assert "ticker (sv.record every 1s)" in checked.stdout
    first, second = launcher.start(config), launcher.start(config)
    for supervisor in (first, second):
        supervisor.wait_ready()
        [started] = supervisor.events("supervisor_started")
        assert started["schedules"] == ["ticker (sv.record every 1s)"]
    with database.connect() as q:
        first.wait(lambda: len(q.jobs(task="sv.record", limit=1000)) >= RUN_S, RUN_S + 10, f"{RUN_S} slots")
        for supervisor in (first, second):
            supervisor.send(signal.SIGTERM)
        for supervisor in (first, second):
            assert supervisor.wait_exit() == 0
        jobs = q.jobs(task="sv.record", limit=1000)
        slots = sorted(job.run_at for job in jobs)
        assert len(slots) == len(set(slots)), "a slot was enqueued twice"
        assert all(b - a == dt.timedelta(seconds=1) for a, b in zip(slots, slots[1:])), f"a slot is missing: {slots}"
        assert all(s.microsecond == 0 for s in slots)
        assert {job.state for job in jobs} <= {JobState.SUCCEEDED, JobState.QUEUED}
        succeeded = [job for job in jobs if job.state is JobState.SUCCEEDED]
        assert len(ledger.read_text().splitlines()) == len(succeeded)
        enqueued_by = [len(s.events("periodic_job_enqueued")) for s in (first, second)]
        assert sum(enqueued_by) == len(jobs)
