"""Profile the hot paths with py-spy (``pip install py-spy``); prints the top costs.

    python -m benchmarks.profile claim --backend postgresql --batch 10 --seconds 5
    python -m benchmarks.profile drain --backend sqlite --jobs 30000 --workers 2
    python -m benchmarks.profile drain --backend postgresql --mix retry10 --jobs 20000

``claim`` runs the in-process Backend.claim + finish loop (what a worker and the
supervisor do per batch, minus the pipe); ``drain`` runs the real supervisor
under ``py-spy record --subprocesses`` over a pre-filled queue. Both keep the raw
collapsed stacks (``--out``, for flamegraph.pl or speedscope) and print the
functions with the most samples, by own time and by inclusive time, per process
role (supervisor or worker).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.split import MIXES
from benchmarks.supervised import REPO_ROOT, SupervisorProcess, wait_finished
from benchmarks.target import Target

_PATH = re.compile(r" \([^)]*?/(?:site-packages|lib/python3\.\d+|main)/")


def summarize(path: Path, *, contains: str | None = None, excludes: str | None = None, top: int = 25) -> str:
    """Top own-time and inclusive-time frames of a py-spy ``--format raw`` file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or (contains and contains not in stack) or (excludes and excludes in stack):
            continue
        n = int(count)
        total += n
        frames = [_PATH.sub(" (", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return f"no samples{f' containing {contains!r}' if contains else ''}"
    lines = [f"{total} samples" + (f" containing {contains!r}" if contains else ""), "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top + 15)]
    return "\n".join(lines)


def _py_spy() -> str:
    exe = shutil.which("py-spy")
    if exe is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    return exe


def profile_claim(args: argparse.Namespace, out: Path) -> None:
    script = (
        "import sys, time\n"
        "from benchmarks.target import Target\n"
        "from benchmarks.claimers import BurrowClaimer\n"
        f"t = Target.create({args.backend!r}); t.migrate()\n"
        "try:\n"
        f"    t.reset({max(50_000, args.batch * 2000)})\n"
        "    c = BurrowClaimer(t)\n"
        f"    c.claim_loop({args.batch}, time.monotonic() + 0.3)\n"
        f"    t0 = time.monotonic(); n = c.claim_loop({args.batch}, time.monotonic() + {args.seconds})\n"
        "    print(f'{n / (time.monotonic() - t0):,.0f} jobs/s under the profiler')\n"
        "finally:\n"
        "    t.destroy()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    subprocess.run([_py_spy(), "record", "-r", str(args.rate), "-f", "raw", "-o", str(out), "--", sys.executable, "-c",
                    script], check=True, env=env, cwd=REPO_ROOT)
    print(summarize(out, contains="claim_loop", top=args.top))


def profile_drain(args: argparse.Namespace, out: Path) -> None:
    target = Target.create(args.backend)
    try:
        target.migrate()
        target.reset(args.jobs, **MIXES[args.mix])
        sup = SupervisorProcess(target, args.workers, args.batch)
        argv, env, cwd = sup.launch()  # the benchmark's own command line; py-spy starts the process
        spy = subprocess.Popen(
            [_py_spy(), "record", "--subprocesses", "-r", str(args.rate), "-f", "raw", "-o", str(out), "--", *argv],
            # Not a pipe nobody reads: a mix that logs (job_retried) would fill it and block.
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=out.with_suffix(".log").open("w"),
        )
        started = time.monotonic()
        time.sleep(1.0)
        import psutil

        children = psutil.Process(spy.pid).children()
        sup.proc = children[0] if children else None  # type: ignore[assignment]
        with target.admin() as conn:
            while target.unfinished(conn) and time.monotonic() - started < 600:
                time.sleep(0.05)
        jobs, seconds, _ = target.span()
        print(f"{jobs:,} jobs in {seconds:.2f} s = {jobs / seconds:,.0f} jobs/s under the profiler")
        for child in psutil.Process(spy.pid).children():
            child.send_signal(signal.SIGTERM)
        spy.wait(60)
    finally:
        target.destroy()
    # A forked worker's stacks start inside the supervisor's _spawn: tell them apart by worker_main.
    print("\n=== supervisor process ===")
    print(summarize(out, contains="Supervisor.run", excludes="worker_main", top=args.top))
    print("\n=== worker processes ===")
    print(summarize(out, contains="worker_main", top=args.top))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("claim", "drain"))
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--mix", choices=sorted(MIXES), default="noop", help="drain: the suite's job mixes")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", help="where to keep the collapsed stacks (default: a temp file)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="burrow-profile-")) / f"{args.what}.txt"
    (profile_claim if args.what == "claim" else profile_drain)(args, out)
    print(f"\ncollapsed stacks: {out}")


if __name__ == "__main__":
    main()
