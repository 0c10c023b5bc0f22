"""Tasks in a module no app's ``tasks`` module imports: the worker does not find
them at start, and takes them up when their first job comes."""

from __future__ import annotations

import os
import signal
from typing import Any

from burrow.django.compat import tasks_module

task = tasks_module().task


@task
def shout(word: str) -> str:
    return word.upper()


@task(takes_context=True, max_retries=1)
def dies_once(context: Any) -> int:
    """Its first run kills its own worker (SIGKILL); the next one succeeds."""
    if context.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return context.attempt
