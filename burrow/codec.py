"""Typed payloads and results <-> orjson bytes.

Storage deals only in opaque bytes; this module is the one place that knows how a
Python value becomes those bytes and back. cattrs' orjson converter does the typed
part (dataclasses, TypedDict, enums, Optional, datetimes, containers), so burrow
does not hand-write a decoder for a solved problem.

Two checks are added on top because orjson would otherwise store something the
reader cannot trust: a float that is NaN or infinite (orjson writes it as null)
and a naive datetime (its meaning depends on the reader's clock) are refused.

Scalars decode strictly. cattrs' defaults convert with the type's constructor, so
``"false"`` became True for a bool field, 3.7 became 3 for an int and 5 became
"5" for a str: a payload written by another producer (or by hand) with the wrong
type would run with a value nobody sent. Here a JSON value must already be of
the field's type (an integer is accepted where a float is expected).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Final

import orjson
from cattrs.preconf.orjson import make_converter

from burrow.errors import PayloadDecodeError, PayloadEncodeError

_converter: Final = make_converter()


class _Refused(ValueError):
    """A decoded value refused, in words that name types, never the value: a payload
    may hold secrets, and this text ends up in the job's last_error and in logs."""


def _structure_datetime(value: Any, _: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise _Refused(f"expected an ISO 8601 datetime string, got {type(value).__name__}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Refused("expected an ISO 8601 datetime, got a str that is not one") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _Refused("naive datetime: burrow needs timezone-aware datetimes")
    return parsed


# datetimes always leave burrow timezone-aware; fromisoformat keeps the offset.
# The check is in the hook: once isoformat() ran, a naive datetime is just a string.
_converter.register_unstructure_hook(dt.datetime, lambda d: _aware(d).isoformat())
_converter.register_structure_hook(dt.datetime, _structure_datetime)

_JSON_SCALARS: Final = (str, int, bool, type(None))


def _structure_none(value: Any, _: Any) -> None:
    if value is not None:
        raise _Refused(f"expected null, got {type(value).__name__}")
    return None


# cattrs has no hook for a bare ``None`` annotation: a result task whose handler
# returns ``-> None`` stores null and must read it back.
_converter.register_structure_hook(type(None), _structure_none)


def _strict(type_: type, accepts: tuple[type, ...]) -> Any:
    def structure(value: Any, cls: Any) -> Any:
        if cls is not type_:  # a subclass, such as an IntEnum or a StrEnum: by value, as cattrs does
            return cls(value)
        if isinstance(value, bool) and type_ is not bool or not isinstance(value, accepts):
            raise _Refused(f"expected {type_.__name__}, got {type(value).__name__}")
        return type_(value)

    return structure


for _type, _accepts in ((bool, (bool,)), (int, (int,)), (float, (int, float)), (str, (str,))):
    _converter.register_structure_hook(_type, _strict(_type, _accepts))


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()!r}: burrow needs timezone-aware datetimes")
    return value


def _check_json(value: Any, path: str = "$") -> None:
    """Refuse what orjson would silently alter: NaN/inf floats and naive datetimes."""
    if isinstance(value, _JSON_SCALARS):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadEncodeError(f"{path}: {value!r} is not valid JSON (NaN and infinity are refused)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
    elif isinstance(value, dt.datetime) and value.tzinfo is None:
        raise PayloadEncodeError(f"{path}: naive datetime {value.isoformat()!r}; use a timezone-aware one")


def encode(value: Any, type_: Any = Any) -> bytes:
    """Encode ``value`` (typed as ``type_``) to JSON bytes, or raise PayloadEncodeError."""
    try:
        plain = _converter.unstructure(value, unstructure_as=type_)
    except Exception as exc:  # cattrs raises many kinds; the caller needs one
        raise PayloadEncodeError(f"cannot encode {type(value).__name__}: {exc}") from exc
    _check_json(plain)
    try:
        return orjson.dumps(plain)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise PayloadEncodeError(f"cannot encode {type(value).__name__}: {exc}") from exc


def encode_payload(value: Any, type_: Any = Any) -> bytes:
    """:func:`encode`, then :func:`decode` by the worker's strict rules: a payload the
    worker would refuse (a str where P says int) raises PayloadEncodeError here, at
    enqueue, and nothing is stored. ``Any`` (an untyped handler) takes any JSON."""
    data = encode(value, type_)
    if type_ is not Any:
        try:
            decode(data, type_)
        except PayloadDecodeError as exc:
            problems = "; ".join(exc.fields) or str(exc)
            raise PayloadEncodeError(f"payload is not a valid {_type_name(type_)}: {problems}") from None
    return data


def decode(data: bytes, type_: Any = Any) -> Any:
    """Decode JSON bytes into ``type_``, or raise PayloadDecodeError (a PermanentError)
    whose ``fields`` name each bad field (and whose cause is not chained: the decoder's
    exception groups are its internals, not the job's story)."""
    try:
        plain = orjson.loads(data)
        if type_ is Any:
            return plain
        return _converter.structure(plain, type_)
    except Exception as exc:
        problems = _problems(exc, type_)
        message = f"cannot decode payload into {_type_name(type_)}: {'; '.join(problems)}"
        raise PayloadDecodeError(message, tuple(_as_field(p) for p in problems)) from None


def _as_field(problem: str) -> str:
    """"expected int, got str @ $.a" -> "$.a: expected int, got str"."""
    what, at, path = problem.rpartition(" @ ")
    return f"{path}: {what}" if at else problem


def _type_name(type_: Any) -> str:
    return getattr(type_, "__qualname__", None) or repr(type_)


def _problems(exc: BaseException, type_: Any) -> list[str]:
    """What was wrong, one entry per bad field (see _describe)."""
    from cattrs.errors import BaseValidationError, ForbiddenExtraKeysError
    from cattrs.v import transform_error

    if isinstance(exc, (BaseValidationError, ForbiddenExtraKeysError)):
        return list(transform_error(exc, format_exception=_format_error))
    return [_describe(exc, type_)]


def _describe(exc: BaseException, type_: Any) -> str:
    """One line for an error; cattrs' grouped errors name each bad field.

    The payload's values never appear: the messages of cattrs, enums and
    datetime parsing quote them, so only ours (_Refused), which name types,
    are shown as they are. JSON syntax errors give a position, not content.
    """
    from cattrs.errors import BaseValidationError, ForbiddenExtraKeysError
    from cattrs.v import transform_error

    if isinstance(exc, orjson.JSONDecodeError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (BaseValidationError, ForbiddenExtraKeysError)):
        return "; ".join(transform_error(exc, format_exception=_format_error))
    return _format_error(exc, type_)


def _format_error(exc: BaseException, type_: Any) -> str:
    """What was wrong with one value, without the value (see _describe)."""
    from cattrs.errors import ForbiddenExtraKeysError

    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"extra fields found ({', '.join(sorted(exc.extra_fields))})"
    if type_ is None:
        return f"invalid value ({type(exc).__name__})"
    return f"invalid value for type, expected {getattr(type_, '__name__', None) or _type_name(type_)}"
