"""Durations, sizes, addresses and DSNs as people write them, read and written back.

The config file, the ``burrow`` command's options and the README all spell a
duration as "30s" and a size as "512MB"; one reader for each keeps "5m" meaning the
same everywhere, and the writers (``duration_text``, ...) let generated docs show a
default the way a person would type it. Readers raise ValueError saying what is
wrong; the caller adds where (a config key, a command-line option).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, Final

__all__ = [
    "bind_text",
    "duration_text",
    "parse_bind",
    "parse_duration",
    "parse_size",
    "redact_dsn",
    "show",
    "size_text",
]

# Digits are bounded so that a pasted blob is "bad", not a huge-number error.
_NUMBER: Final = r"(\d{1,20}(?:\.\d{0,20})?|\.\d{1,20})"
_DURATION_RE: Final = re.compile(rf"\s*{_NUMBER}\s*(ms|s|m|h|d)?\s*")
_DURATION_UNITS: Final[Mapping[str | None, Fraction]] = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    None: Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_DURATION_HINT: Final = '(use e.g. "500ms", "30s", "5m", "7d")'

_SIZE_RE: Final = re.compile(rf"\s*{_NUMBER}\s*([A-Za-z]*)\s*")
_SIZE_UNITS: Final[Mapping[str, int]] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_HINT: Final = '(use e.g. "512MB", "1GiB", "100kB")'


def parse_duration(text: str | int | float) -> float:
    """Seconds from "500ms", "30s", "5m", "1h", "7d", "1.5s" or a bare number of seconds.

    Exact fractions keep "123ms" equal to 123 / 1000 and "0.1h" exactly 360.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"bad duration {show(text)} {_DURATION_HINT}")
    if isinstance(text, str):
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"bad duration {show(text)} {_DURATION_HINT}")
        seconds = float(Fraction(match[1]) * _DURATION_UNITS[match[2]])
    else:
        seconds = float(text)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"bad duration {show(text)}: must be a finite, non-negative time")
    return seconds


def parse_size(text: str | int) -> int:
    """Bytes from "512MB", "1GiB", "100kB" or a bare integer of bytes.

    kB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024, as their
    names promise; units are matched without regard to case.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"bad size {show(text)} {_SIZE_HINT}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"bad size {text}: must not be negative")
        return text
    match = _SIZE_RE.fullmatch(text)
    factor = _SIZE_UNITS.get(match[2].lower()) if match is not None else None
    if match is None or factor is None:
        raise ValueError(f"bad size {show(text)} {_SIZE_HINT}")
    size = Fraction(match[1]) * factor
    if size.denominator != 1:
        raise ValueError(f"bad size {show(text)}: not a whole number of bytes")
    return size.numerator


_BIND_RE: Final = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})")


def parse_bind(value: Any) -> tuple[str, int]:
    """("host", port) from "127.0.0.1:9464", "localhost:8080" or "[::1]:9464"."""
    match = _BIND_RE.fullmatch(value) if isinstance(value, str) else None
    port = int(match["port"]) if match else 0
    if match is None or not 0 < port < 65536:
        raise ValueError(f'must be "host:port" (e.g. "127.0.0.1:9464"), got {show(value)}')
    return match["v6"] or match["host"], port


# Up to the first ":" of the user part, then to the last "@": over-redacting a
# mistyped DSN is fine, leaking part of a password is not.
_URL_USERINFO_RE: Final = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@]*:)(?P<password>.*)@")
_BARE_USERINFO_RE: Final = re.compile(r"^(?P<head>[^:@]*:)(?P<password>.*)@")
_URL_QUERY_PASSWORD_RE: Final = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_KV_PASSWORD_RE: Final = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``, safe to log or print.

    The password is taken to run up to the *last* "@": an unescaped "@" or "/" in
    a password then hides too much rather than leaking the rest of it. A
    ``password=`` query parameter, libpq's ``key=value`` form and a mistyped URL
    such as ``postgresql:/user:pw@host`` are covered too.
    """
    if "://" in dsn:
        redacted = _URL_USERINFO_RE.sub(r"\g<head>***@", dsn, count=1)
        return _URL_QUERY_PASSWORD_RE.sub(r"\1***", redacted)
    redacted = _BARE_USERINFO_RE.sub(r"\g<head>***@", dsn, count=1)
    return _KV_PASSWORD_RE.sub(r"\1***", redacted)


def sqlite_absolute(dsn: str, base: str | os.PathLike[str] | None = None) -> str:
    """A SQLite DSN whose file path is relative, made absolute against ``base`` (default:
    the current directory); any other DSN as it is.

    ``sqlite:///jobs.db`` read from ``/etc/burrow/jobs.toml`` is ``sqlite:////etc/burrow/jobs.db``:
    a config file names its database the same way wherever the command runs from, and
    every message then shows where the file is.
    """
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() != "sqlite" or not rest.startswith("/"):
        return dsn
    path, question, query = rest[1:].partition("?")
    if not path or path == ":memory:" or path.startswith("file:") or os.path.isabs(path):
        return dsn
    absolute = os.path.abspath(os.path.join(os.fspath(base) if base is not None else os.getcwd(), path))
    return f"{scheme}:///{absolute}{question}{query}"


def shown_dsn(dsn: str) -> str:
    """A DSN for a message: the password hidden, a relative SQLite path made absolute."""
    return redact_dsn(sqlite_absolute(dsn))


def duration_text(seconds: float) -> str:
    """``seconds`` in the largest unit that says it in whole numbers: 0.05 -> "50ms", 86400 -> "1d"."""
    exact = Fraction(repr(seconds))
    for unit in ("d", "h", "m", "s", "ms"):
        count = exact / _DURATION_UNITS[unit]
        if count.denominator == 1:
            return f"{count}{unit}"
    return f"{seconds}s"


def size_text(size: int) -> str:
    """``size`` in the largest power of 1024 that divides it: 8388608 -> "8MiB"."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        factor = _SIZE_UNITS[unit.lower()]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def bind_text(bind: tuple[str, int]) -> str:
    """The "host:port" that parse_bind reads back as ``bind``."""
    host, port = bind
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def show(value: object) -> str:
    """A value as TOML-ish text for an error message: one line, short enough to read."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dict, list)):
        text = f"a {'table' if isinstance(value, dict) else 'list'} {value!r}"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
