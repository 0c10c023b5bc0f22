"""A config key declared once: as the dataclass field it fills.

gunicorn's model: each setting says, in one place, its name, how its value is read,
its default and what it is for, and everything else is made from that. Here the
place is a field of a frozen dataclass (a record: one ``[section]`` of the file, or
one table of an array of tables): the field's default is the key's default and its
metadata holds a :class:`Setting` with the rest. The loader in burrow/config.py reads
and checks keys by walking the fields, and :func:`markdown_table` renders the
README's table from them, so the file, the checks and the docs cannot disagree.

This module knows how keys are declared, not which keys exist: that is
burrow/config.py's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Final, TypeVar

from burrow.notation import duration_text, size_text

__all__ = [
    "Setting",
    "arrays",
    "declare",
    "default_text",
    "declared",
    "markdown_table",
    "sections",
    "setting",
    "setting_names",
    "setting_of",
]

T = TypeVar("T")
D = TypeVar("D")

_SETTING: Final = "burrow.setting"  # the Setting in a field's metadata


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of the file: its name there, how its value is read, what it is for.

    ``parse`` raises ValueError saying what is wrong with a value; the loader adds
    where. ``doc`` is one line of Markdown for the README. ``absent`` is what leaving
    the key out means, for the README, when the default cannot say it (None, or no
    default: a key the file must set). ``show`` turns a default back into the value
    the file would hold, when the unit in the field's name cannot (a "host:port").
    ``tables`` is set on a key whose value is an array of tables: the record of one table.
    """

    name: str
    parse: Callable[[Any], Any]
    doc: str
    absent: str = "—"
    show: Callable[[Any], Any] | None = None
    tables: type[Any] | None = None


def declare(
    name: str,
    parse: Callable[[Any], Any],
    doc: str,
    *,
    absent: str = "—",
    show: Callable[[Any], Any] | None = None,
    tables: type[Any] | None = None,
) -> Mapping[str, Setting]:
    """Field metadata declaring key ``name``, for a ``field()`` that :func:`setting` cannot
    make: one without a default (a key the file must set) or with a default factory."""
    return {_SETTING: Setting(name, parse, doc, absent, show, tables)}


def setting(
    name: str,
    parse: Callable[[Any], T],
    default: D,
    doc: str,
    *,
    absent: str = "—",
    show: Callable[[Any], Any] | None = None,
    tables: type[Any] | None = None,
) -> T | D:
    """A dataclass field holding key ``name``: ``parse`` reads the file's value, ``default``
    stands when the file leaves the key out, ``doc`` is its line in the README.

    Typed as the value (what ``parse`` returns, or the default) so that the field's
    annotation is checked against both; at run time it is the ``field()`` carrying the
    declaration.
    """
    return field(default=default, metadata=declare(name, parse, doc, absent=absent, show=show, tables=tables))


def declared(record: Any) -> Iterator[tuple[Field[Any], Setting]]:
    """The fields of a record (a dataclass or its type), each with its Setting.

    Every field of a record is a key: a field without a declaration is a KeyError
    here, which the unit tests reach for every record.
    """
    for item in fields(record):
        yield item, item.metadata[_SETTING]


def setting_names(record: Any) -> tuple[str, ...]:
    """The keys a table of this record may hold, in declaration order."""
    return tuple(declaration.name for _, declaration in declared(record))


def setting_of(record: Any, attribute: str) -> Setting:
    """The Setting of the field named ``attribute``."""
    return next(item.metadata[_SETTING] for item in fields(record) if item.name == attribute)


def sections(config: Any) -> dict[str, Any]:
    """The file's ``[section]`` names -> their records: the fields of ``config`` whose default
    is a record, in the order of its fields."""
    return {item.name: item.default_factory for item in fields(config) if is_dataclass(item.default_factory)}


def arrays(config: Any) -> dict[str, Setting]:
    """The file's top-level ``[[name]]`` arrays of tables: the declared fields of ``config``."""
    return {found.name: found for item in fields(config) if (found := item.metadata.get(_SETTING)) is not None}


# -- the README's table ------------------------------------------------------------


def markdown_table(config: Any) -> str:
    """The README's table of every key of ``config``'s file, one row each, in declaration order."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for name, record in sections(config).items():
        for item, declaration in declared(record):
            if declaration.tables is not None:
                rows += _array_rows(f"[[{name}.{declaration.name}]]", declaration)
            else:
                rows.append(_row(f"[{name}] {declaration.name}", default_text(item, declaration), declaration.doc))
    for declaration in arrays(config).values():
        rows += _array_rows(f"[[{declaration.name}]]", declaration)
    return "\n".join(rows) + "\n"


def _array_rows(label: str, declaration: Setting) -> list[str]:
    rows = [_row(label, declaration.absent, declaration.doc)]
    for item, key in declared(declaration.tables):
        rows.append(_row(f"{label} {key.name}", default_text(item, key), key.doc))
    return rows


def _row(label: str, default: str, doc: str) -> str:
    return f"| `{label}` | {default} | {doc} |"


def default_text(item: Field[Any], declaration: Setting) -> str:
    """The field's default as the file would write it, as Markdown code; ``absent`` when
    there is none to write. A field named ``*_s`` holds seconds and ``*_bytes`` bytes (the
    house names units), so those come back as "30s" and "8MiB"."""
    if item.default is not MISSING:
        value: Any = item.default
    elif item.default_factory is not MISSING:
        value = item.default_factory()
    else:
        return declaration.absent
    if value is None:
        return declaration.absent
    if declaration.show is not None:
        value = declaration.show(value)
    elif item.name.endswith("_s"):
        value = duration_text(value)
    elif item.name.endswith("_bytes"):
        value = size_text(value)
    return f"`{_toml_text(value)}`"


def _toml_text(value: Any) -> str:
    """A default as a TOML value (an inline one for a table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_text(each) for each in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{name} = {_toml_text(each)}" for name, each in value.items()) + " }" if value else "{}"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)
