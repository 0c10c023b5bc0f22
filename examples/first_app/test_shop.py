"""Tasks tested in-process: drain() runs the due jobs here, on a temporary SQLite file."""

from pathlib import Path

import pytest

import burrow
from burrow.errors import JobFailed
from shop.tasks import Order, app, charge_task, send_receipt_task


@pytest.fixture
def q(tmp_path: Path) -> burrow.JobQueue:
    q = burrow.connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    app.register_jobs(q)
    return q


def test_a_charge_sends_a_receipt(q: burrow.JobQueue) -> None:
    job_id = charge_task.enqueue(q, Order(1, "ann@example.com", 250))
    assert q.drain() == 2  # the charge, then the receipt it enqueued
    receipt_job = charge_task.result(q, job_id)
    assert send_receipt_task.result(q, receipt_job) == "receipt for order 1 sent to ann@example.com"


def test_an_empty_order_fails_at_once(q: burrow.JobQueue) -> None:
    job_id = charge_task.enqueue(q, Order(2, "bob@example.com", 0))
    q.drain()
    assert q.job(job_id).attempts == 1
    with pytest.raises(JobFailed, match="nothing to charge"):
        charge_task.result(q, job_id)
