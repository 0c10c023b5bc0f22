"""`burrow queues`, `jobs run-now`, `audit` and the audit rows of CLI actions (issue 25), on both databases."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket

from burrow.job import JobState
from tests.cli.test_cli import burrow_cli, ok, one_line, where
from tests.conftest import Database


def test_queues_pause_resume_and_list(database: Database) -> None:
    with database.connect() as q:
        q.enqueue("cli.mail", {}, queue="mail")
        q.enqueue("cli.other", {})
        assert ok(database, "queues", "pause", "mail") == "paused queue mail\n"
        assert ok(database, "queues", "pause", "mail") == "paused queue mail (it was paused already)\n"
        assert q.paused_queues() == ["mail"]
        listed = json.loads(ok(database, "queues", "list", "--json"))
        by_name = {item["name"]: item for item in listed}
        assert by_name["mail"]["paused"] is True and by_name["mail"]["queued"] == 1
        assert by_name["default"]["paused"] is False
        text = ok(database, "queues", "list")
        assert "mail" in text and "paused" in text
        status = json.loads(ok(database, "status", "--json"))
        assert status["paused_queues"] == ["mail"]
        assert "paused" in ok(database, "status")
        assert ok(database, "queues", "resume", "mail") == "resumed queue mail\n"
        assert q.paused_queues() == []


def test_run_now_and_its_refusal(database: Database) -> None:
    with database.connect() as q:
        later = q.enqueue("cli.later", {}, delay=dt.timedelta(hours=1))
        assert ok(database, "jobs", "run-now", str(later)) == f"job {later} is due now\n"
        line = one_line(burrow_cli("jobs", "run-now", str(later), *where(database)), 1)
        assert f"job {later} (queued)" in line and "due later" in line
        assert "no job" in one_line(burrow_cli("jobs", "run-now", "999999", *where(database)), 1)
        assert q.job(later).state is JobState.QUEUED and q.job(later).run_at <= q.backend.now()


def test_cli_actions_are_audited_as_user_at_host(database: Database) -> None:
    with database.connect() as q:
        job = q.enqueue("cli.x", {})
        env = {"USER": "operator7"}
        assert burrow_cli("jobs", "cancel", str(job), *where(database), env=env).returncode == 0
        assert burrow_cli("jobs", "cancel", str(job), *where(database), env=env).returncode == 1  # refused: no row
        assert burrow_cli("queues", "pause", "mail", *where(database), env=env).returncode == 0
        assert burrow_cli("prune", "--older-than", "1d", *where(database), env=env).returncode == 0
        entries = json.loads(ok(database, "audit", "--json"))
        actor = f"operator7@{socket.gethostname()}"
        assert [(e["action"], e["actor"], e["job_id"], e["queue"], e["count"]) for e in entries] == [
            ("prune", actor, None, None, 0),
            ("pause", actor, None, "mail", 0),
            ("cancel", actor, job, None, 1),
        ]
        text = ok(database, "audit", "--limit", "2")
        assert "pause" in text and "queue mail" in text and f"job {job}" not in text
        assert os.environ.get("USER") != "operator7"


def test_jobs_list_search(database: Database) -> None:
    with database.connect() as q:
        a = q.enqueue("shop.order", {"customer": "ACME Corp"})
        q.enqueue("shop.order", {"customer": "Globex"})
        c = q.enqueue("shop.refund", {"customer": "acme"})
        found = json.loads(ok(database, "jobs", "list", "--search", "Acme", "--json"))
        assert [job["id"] for job in found] == [c, a]
        text = ok(database, "jobs", "list", "--search", "acme", "--task", "shop.order")
        assert f"\n{a} " in text and f"\n{c} " not in text
        assert ok(database, "jobs", "list", "--search", "nobody") == "no jobs\n"
