"""The floors ``--quick`` enforces: a burrow / raw-SQL ratio below one of these fails the run
(and the ceilings: a figure above one of those fails it).

The one place the numbers live; benchmarks/README.md documents them. Each is about
half of the ratio measured on the 2-core development machine over three runs
(two ``--quick`` and one full), and below the lowest of them: the machine is
shared and a single 0.3 s round can lose half its speed to a neighbour, so the
floors catch a lost batch or an extra round trip per job, not a few percent.
Raise them when the hot path gets faster (the measured table in the README says
what a run gives now).

Keys are the row keys printed in the table: ``<backend>.<benchmark>.<params>``.
"""

from __future__ import annotations

FLOORS: dict[str, float] = {
    # task.enqueue_many of 100 vs one multi-row INSERT
    "sqlite.enqueue.many100": 0.25,
    "postgresql.enqueue.many100": 0.40,
    # Backend.claim + Backend.finish vs the same SQL issued directly
    "sqlite.claim.b1.p1": 0.40,
    "sqlite.claim.b10.p1": 0.30,
    "sqlite.claim.b100.p1": 0.30,
    "sqlite.claim.b1000.p1": 0.28,
    "sqlite.claim.b100.p2": 0.30,
    "postgresql.claim.b1.p1": 0.30,
    "postgresql.claim.b10.p1": 0.30,
    "postgresql.claim.b100.p1": 0.25,
    "postgresql.claim.b1000.p1": 0.35,
    "postgresql.claim.b100.p2": 0.20,
    # the real supervisor draining a pre-filled queue vs raw SQL at its batch size
    "sqlite.drain.w2": 0.18,
    "postgresql.drain.w2": 0.25,
    # the same drain at burrow's default log level (two lines a job) vs at warning
    "sqlite.drain.w2.info": 0.40,
    "postgresql.drain.w2.info": 0.40,
}

# Percents a row's own figure must not pass. Memory that still grows over the second
# half of the jobs is a leak, not the warm-up of the first: --quick read 0.1-0.3% over
# its last 2,500 jobs, and 1% there is about 600 bytes kept a job.
CEILINGS: dict[str, float] = {
    "sqlite.memory.growth.second_half": 1.0,
    "postgresql.memory.growth.second_half": 1.0,
}

# --quick also drains beside the latest release (CHANGELOG.md; --against) and fails
# when the checkout falls below this share of the release on these rows: its CPU per
# job, or its jobs/s in at least AGAINST_PAIRS_SHARE of the alternated rounds (see
# suite.ReleaseComparison). A figure below first gets Plan.drain_confirm_rounds more
# rounds.
AGAINST_FLOOR = 0.95
AGAINST_PAIRS_SHARE = 0.8
AGAINST_KEYS: tuple[str, ...] = ("sqlite.drain.w2", "postgresql.drain.w2")
