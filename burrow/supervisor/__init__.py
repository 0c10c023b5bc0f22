"""The supervisor: forks workers, feeds them jobs, stores their results.

Run it with ``python -m burrow.supervisor -c conf/jobs.toml``; under systemd use
``conf/burrow.service``.
"""
