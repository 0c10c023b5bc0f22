"""One claiming OS process of R5: ``python -m tests.reliability.claimer SPEC.json``.

It connects, says so with its ready file, waits for its stdin to close (so
all claimers start together), then claims, logs
each claimed job to the ledger, and finishes, until nothing is due. Every error
that reaches it, as the user of burrow's API, is counted, by its message; the
summary goes to ``out`` as JSON.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path

import burrow
from burrow.backends.records import ClaimRequest, Outcome, OutcomeKind
from burrow.queue import new_owner


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    q = burrow.connect(spec["dsn"], schema=spec["schema"])
    owner = new_owner("claimer")
    backend = q.backend
    tasks = [spec["task"]]
    backend.ping()  # connected (the connection claims use is open) before saying ready
    Path(spec["ready"]).touch()
    if not select.select([sys.stdin], [], [], 60)[0]:  # the start barrier: released when the parent closes our stdin
        sys.exit("no go signal within 60 s")
    claimed: list[int] = []
    errors: list[str] = []
    empty = 0
    while len(errors) < 100:
        try:
            batch = backend.claim(ClaimRequest(tasks, spec["batch"], owner, 60.0))
            if not batch:
                if not backend.has_due(tasks):
                    empty += 1
                    if empty >= 3:  # nothing due, three times over: done
                        break
                continue
            empty = 0
            at = time.time()
            lines = "".join(f"S {j.id} {j.attempt} {os.getpid()} {at:.6f}\nE {j.id} {j.attempt} {os.getpid()} {at:.6f}\n" for j in batch)
            fd = os.open(spec["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, lines.encode())
            os.close(fd)
            claimed += [j.id for j in batch]
            lost = backend.finish([Outcome(j.id, owner, j.attempt, OutcomeKind.SUCCEEDED) for j in batch])
            if lost:
                errors.append(f"lost {lost}")
        except Exception as exc:  # everything a user of the API would see
            errors.append(f"{type(exc).__name__}: {exc}")
    q.close()
    Path(spec["out"]).write_text(json.dumps({"pid": os.getpid(), "claimed": claimed, "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
