"""Progress through a real supervisor (issue 25): a handler's progress(...) calls cross
the pipe with the worker's heartbeat and reach the row with the supervisor's next
lease batch; `jobs show` prints them; the admin's list shows a bar."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from starlette.testclient import TestClient

from burrow.admin import create_app
from burrow.job import JobInfo, JobState
from tests.conftest import Database
from tests.supervisor.app import Gate, announced, progress_task
from tests.supervisor.helpers import Launcher, run_cli, write_config


def test_a_running_jobs_progress_is_written_by_its_supervisor(
    database: Database, launcher: Launcher, gates: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "jobs.toml", database)
    with database.connect() as q:
        job_id = progress_task.enqueue(q, Gate(str(gates), "p"))
        supervisor = launcher.start(config)
        supervisor.wait(lambda: announced(gates, "p"), 15, "the job to run")
        def written() -> JobInfo | None:
            info = q.job(job_id)
            return info if info.progress == 0.4 else None

        info = supervisor.wait(written, 10, "the progress to be written")
        assert info.state is JobState.RUNNING and info.progress_message == "340 of 850 rows"

        where = ["--dsn", database.dsn, *(["--schema", database.schema] if database.schema else [])]
        shown = run_cli([sys.executable, "-m", "burrow.cli", "jobs", "show", str(job_id), *where])
        assert shown.returncode == 0, shown.stderr
        assert "40%" in shown.stdout and "340 of 850 rows" in shown.stdout

        with TestClient(create_app(q)) as c:
            page = c.get("/jobs", params={"state": "running"}).text
            assert '<progress class="progress" max="1" value="0.4"' in page and "340 of 850 rows" in page

        (gates / "p.go").touch()
        supervisor.wait(lambda: q.job(job_id).state is JobState.SUCCEEDED, 15, "the job to finish")
        supervisor.send(signal.SIGTERM)
        assert supervisor.wait_exit() == 0
