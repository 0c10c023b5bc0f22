"""A paused queue through two real supervisors (issue 25): neither claims its jobs
while it is paused, both start again within a second of the resume, and the
metric burrow_queue_paused says so."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from burrow.job import JobState
from tests.conftest import Database
from tests.supervisor.app import Mark, mail_task, record_task
from tests.supervisor.helpers import Launcher, write_config

MAIL = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _paused_metric(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "burrow_queue_paused"
        for sample in family.samples
    }


def test_two_supervisors_leave_a_paused_queue_and_take_it_up_on_resume(
    database: Database, launcher: Launcher, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    port = _free_port()
    config = write_config(tmp_path / "jobs.toml", database)
    with_http = tmp_path / "http.toml"
    with_http.write_text(config.read_text() + f'\n[http]\nbind = "127.0.0.1:{port}"\n')
    with database.connect() as q:
        one = launcher.start(with_http, name="one")
        two = launcher.start(config, name="two")
        one.wait_ready()
        two.wait_ready()

        q.pause_queue("mail", actor="test")
        paused_at = q.backend.now()
        mail = mail_task.enqueue_many(q, [Mark(str(ledger), f"m{i}") for i in range(MAIL)])
        # Jobs of the default queue enqueued after the mail jobs all run: both supervisors
        # are claiming, and neither took a mail job.
        others = record_task.enqueue_many(q, [Mark(str(ledger), f"d{i}") for i in range(40)])
        one.wait(lambda: all(q.job(i).state is JobState.SUCCEEDED for i in others), 30, "the default queue's jobs")
        assert {q.job(i).state for i in mail} == {JobState.QUEUED}
        assert one.wait(lambda: _paused_metric(port).get("mail") == 1.0, 10, "the paused metric")

        resumed_at = q.backend.now()
        q.resume_queue("mail", actor="test")
        one.wait(lambda: all(q.job(i).state is JobState.SUCCEEDED for i in mail), 30, "the mail jobs after the resume")
        first_start = min(q.job(i).started_at for i in mail)  # type: ignore[type-var]
        assert first_start is not None and first_start > paused_at
        latency = (first_start - resumed_at).total_seconds()
        print(f"resume -> first mail claim: {latency * 1000:.0f} ms ({database.kind})")
        assert latency < 1.0
        assert one.wait(lambda: _paused_metric(port).get("mail") == 0.0, 10, "the metric back to 0")
        assert [e.action for e in q.audit()] == ["resume", "pause"]
        for supervisor in (one, two):
            supervisor.send(signal.SIGTERM)
            assert supervisor.wait_exit() == 0
    assert dt.timedelta(0) <= resumed_at - paused_at
