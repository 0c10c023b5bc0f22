"""Checked by mypy in CI (not collected by pytest): the API's types are what users see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_type

import burrow


@dataclass
class Pair:
    a: int
    b: int


def add(p: Pair) -> int:
    return p.a + p.b


async def add_async(p: Pair) -> str:
    return str(p.a + p.b)


def resize(p: Pair) -> None:
    pass


add_task = burrow.define_result_task("math.add", add)
async_task = burrow.define_result_task("math.add_async", add_async)
resize_task = burrow.define_task("images.resize", resize, burrow.with_max_retries(5), burrow.with_priority(10))


def check(q: burrow.JobQueue) -> None:
    job_id = add_task.enqueue(q, Pair(1, 2))
    assert_type(job_id, int)
    assert_type(add_task.result(q, job_id), int)
    assert_type(add_task.wait(q, job_id, timeout=10), int)
    assert_type(async_task.result(q, job_id), str)
    assert_type(resize_task, burrow.TaskDefinition[Pair])
    assert_type(add_task.enqueue_many(q, [Pair(1, 2)]), list[int])
    assert_type(q.job(job_id), burrow.JobInfo)
    assert_type(q.dequeue(job_id), bool)
    assert_type(q.drain(), int)


async def check_async(dsn: str) -> None:
    aq = await burrow.aconnect(dsn, schema=None)
    assert_type(aq, burrow.AsyncJobQueue)
    async with await burrow.aconnect(dsn) as inner:
        assert_type(inner, burrow.AsyncJobQueue)
    job_id = await resize_task.aenqueue(aq, Pair(1, 2), delay=30)
    assert_type(job_id, int)
    assert_type(await add_task.aenqueue_many(aq, [Pair(1, 2)]), list[int])
    assert_type(await add_task.aresult(aq, job_id), int)
    assert_type(await async_task.await_result(aq, job_id, timeout=10), str)
    assert_type(await aq.job(job_id), burrow.JobInfo)
    assert_type(await aq.enqueue("raw.echo", {"any": "json"}, queue="mail"), int)
    assert_type(await aq.cancel(job_id), bool)
    await resize_task.aenqueue(aq, Pair(1, 2), priority="high")  # type: ignore[arg-type]
    await aq.close()
