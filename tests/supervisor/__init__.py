"""Supervisor tests: real processes, real signals, bounded waits."""
