"""``/healthz`` and ``/readyz``: probes for a load balancer or an orchestrator.

``/healthz`` says the app is serving; ``/readyz`` says the database answers, or
gives a one-line reason with 503. Neither goes through the ``auth`` hook: probes
carry no credentials, and these answers show nothing else.
"""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from burrow.admin import web
from burrow.errors import BurrowError

# A probe must answer even when the database host is a black hole (no connect
# timeout there): past this the ping is given up on, and the probe says so.
READY_TIMEOUT_S = 5.0


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    try:
        await asyncio.wait_for(run_in_threadpool(web.queue(request).backend.ping), READY_TIMEOUT_S)
    except BurrowError as exc:
        return PlainTextResponse(f"database unavailable: {web.first_line(str(exc))}", 503)
    except TimeoutError:
        return PlainTextResponse(f"database unavailable: no answer in {READY_TIMEOUT_S:g}s", 503)
    return PlainTextResponse("ok")


routes = [
    Route("/healthz", healthz, name="healthz"),
    Route("/readyz", readyz, name="readyz"),
]
