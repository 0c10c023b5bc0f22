"""How a worker's faulthandler dump becomes part of a job's error (children.format_stack)."""

from __future__ import annotations

from burrow.supervisor.children import format_stack

HEARTBEAT = """Thread 0x00007f04ffceb6c0 (most recent call first):
  File "/app/burrow/supervisor/worker.py", line 129 in heartbeat_loop
  File "/usr/lib/python3.11/threading.py", line 982 in run
"""
JOB = """Current thread 0x00007f0500a05b80 (most recent call first):
  File "/app/jobs.py", line 8 in stuck_in_a_known_place
  File "/app/jobs.py", line 12 in handler
"""


def test_the_thread_that_took_the_signal_comes_first() -> None:
    assert format_stack(HEARTBEAT + "\n" + JOB) == JOB.rstrip("\n") + "\n\n" + HEARTBEAT.rstrip("\n")


def test_no_dump_is_no_stack() -> None:
    assert format_stack("") == ""
    assert format_stack("\n\n") == ""


def test_a_long_stack_is_cut_at_a_line_end_and_says_so() -> None:
    frames = "".join(f'  File "/app/jobs.py", line {n} in recurse\n' for n in range(1, 101))
    dump = HEARTBEAT + "\n" + "Current thread 0x1 (most recent call first):\n" + frames
    stack = format_stack(dump, limit_chars=500)
    body, note = stack.rsplit("\n", 1)
    assert note == "... (stack cut at 500 characters)"
    assert len(body) <= 500 and body.startswith("Current thread 0x1")
    assert body.endswith("in recurse")  # whole lines only


def test_a_nul_is_spelled_out() -> None:
    """PostgreSQL text cannot hold a NUL; a path with one must not make the outcome unwritable."""
    assert format_stack('Current thread 0x1:\n  File "/a\x00b.py", line 1 in f\n') == (
        'Current thread 0x1:\n  File "/a\\x00b.py", line 1 in f'
    )
