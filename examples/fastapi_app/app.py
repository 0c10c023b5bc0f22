"""A FastAPI app that enqueues inside its own transaction and awaits results: the
README's example (tests/backends/test_async_readme.py runs it and compares the two).
Set DSN to your database (with an `orders` table: id integer primary key, image
text), run `uvicorn app:app`, and a supervisor whose app registers resize_task on the
same database and schema."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException
from sqlalchemy.ext.asyncio import create_async_engine

import burrow
from burrow.errors import JobFailed, WaitTimeout

DSN = "postgresql://app@db/app"
SCHEMA = "jobs"


@dataclass
class Resize:
    path: str
    width: int


def resize(p: Resize) -> str:
    return f"{p.path} at {p.width}px"


resize_task = burrow.define_result_task("images.resize", resize)
orders = sa.Table("orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("image", sa.Text))
engine = create_async_engine(DSN.replace("postgresql://", "postgresql+psycopg://", 1))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with await burrow.aconnect(DSN, schema=SCHEMA, pool_size=10) as jobs:
        app.state.jobs = jobs
        yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/orders/{order_id}")
async def place_order(order_id: int, image: str) -> dict[str, int]:
    async with engine.begin() as conn:  # the job exists if and only if the order does
        await conn.execute(orders.insert().values(id=order_id, image=image))
        job_id = await resize_task.aenqueue(app.state.jobs, Resize(image, 640), conn=conn)
    return {"job": job_id}


@app.get("/jobs/{job_id}")
async def job_result(job_id: int) -> dict[str, str]:
    try:
        return {"result": await resize_task.await_result(app.state.jobs, job_id, timeout=2)}
    except WaitTimeout:
        raise HTTPException(504, f"job {job_id} has not finished yet") from None
    except JobFailed as exc:
        raise HTTPException(500, str(exc)) from None
