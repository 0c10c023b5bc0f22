"""Rows of figures, the stdout table and the JSON document."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import statistics
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    key: str  # "<backend>.<benchmark>.<params>": what floors refer to
    backend: str
    bench: str
    params: str
    value: float  # burrow's figure (median of rounds)
    unit: str = "jobs/s"
    baseline: float | None = None  # raw SQL's figure measured beside it (median)
    rounds: list[float] = field(default_factory=list)
    baseline_rounds: list[float] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline:
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "MB":
        return f"{value:.1f}"
    if unit == "%":
        return f"{value:+.1f}"
    return f"{value:,.0f}"


def table(rows: list[Row]) -> str:
    header = ("benchmark", "burrow", "raw SQL", "ratio", "unit", "note")
    lines = [[r.key, _fmt(r.value, r.unit), _fmt(r.baseline, r.unit), f"{r.ratio:.2f}" if r.ratio is not None else "-",
              r.unit, r.note] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = []
    for i, line in enumerate([list(header), *lines]):
        cells = [str(c).ljust(w) if j in (0, 4, 5) else str(c).rjust(w) for j, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    try:
        import psutil

        info["memory_total_mb"] = round(psutil.virtual_memory().total / 2**20)
        info["load_average"] = os.getloadavg()
    except Exception:
        pass
    return info


def versions(postgres_server: str | None) -> dict[str, Any]:
    import psycopg
    import sqlalchemy

    return {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgres_server": postgres_server,
        "burrow": _version("burrow"),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "orjson": _version("orjson"),
        "structlog": _version("structlog"),
    }
