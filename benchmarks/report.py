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
    baseline: float | None = None  # raw SQL's figure measured beside it (median): burrow's statements (raw.py)
    rounds: list[float] = field(default_factory=list)
    baseline_rounds: list[float] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    fixed: float | None = None  # the fixed textbook loop's figure beside it (fixed.py), median
    fixed_rounds: list[float] = field(default_factory=list)
    against: float | None = None  # an earlier release's figure beside it (--against), median
    against_rounds: list[float] = field(default_factory=list)
    against_label: str = ""  # which release ("0.2.0", or the ref as given)
    against_cpu: float | None = None  # the release's CPU per job / the checkout's (medians)

    @property
    def ratio(self) -> float | None:
        return _ratio(self.value, self.baseline)

    @property
    def fixed_ratio(self) -> float | None:
        return _ratio(self.value, self.fixed)

    @property
    def vs_against(self) -> float | None:
        """The checkout / the earlier release, medians of alternated rounds."""
        return _ratio(self.value, self.against)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["fixed_ratio"] = self.fixed_ratio
        data["vs_against"] = self.vs_against
        return data


def _ratio(value: float, baseline: float | None) -> float | None:
    return value / baseline if baseline else None


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


def _fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def table(rows: list[Row]) -> str:
    """The stdout table; the fixed-loop and release columns only when some row has them."""
    header = ["benchmark", "burrow", "raw SQL", "ratio"]
    with_fixed = any(r.fixed is not None for r in rows)
    labels = sorted({r.against_label for r in rows if r.against is not None})
    if with_fixed:
        header += ["fixed raw", "vs fixed"]
    for label in labels:
        header += [label, f"vs {label}", f"CPU vs {label}"]
    header += ["unit", "note"]
    lines = []
    for r in rows:
        line = [r.key, _fmt(r.value, r.unit), _fmt(r.baseline, r.unit), _fmt_ratio(r.ratio)]
        if with_fixed:
            line += [_fmt(r.fixed, r.unit), _fmt_ratio(r.fixed_ratio)]
        for label in labels:
            mine = r.against is not None and r.against_label == label
            line += [_fmt(r.against if mine else None, r.unit), _fmt_ratio(r.vs_against if mine else None),
                     _fmt_ratio(r.against_cpu if mine else None)]
        lines.append([*line, r.unit, r.note])
    left = {0, len(header) - 2, len(header) - 1}
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = []
    for i, line in enumerate([header, *lines]):
        cells = [str(c).ljust(w) if j in left else str(c).rjust(w) for j, (c, w) in enumerate(zip(line, widths))]
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

    import burrow

    return {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgres_server": postgres_server,
        "burrow": burrow.__version__,  # the checkout's (its distribution is burrow-jobs)
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": psycopg.__version__,
        "orjson": _version("orjson"),
        "structlog": _version("structlog"),
    }
