"""burrow's version, from one source: the installed distribution's metadata.

The distribution is ``burrow-jobs`` (PyPI's ``burrow`` is an unrelated project); the
import name stays ``burrow``. A checkout run without being installed (``PYTHONPATH``)
reads the version from its ``pyproject.toml``, which is where the metadata comes from
when it is installed.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Final

DISTRIBUTION: Final = "burrow-jobs"


def _version() -> str:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        installed = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed is not None and not pyproject.is_file():
        return installed.version
    try:  # a checkout (installed editable or not): its own pyproject.toml is the source
        with pyproject.open("rb") as f:
            project = tomllib.load(f)["project"]
        if project.get("name") == DISTRIBUTION:
            return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    return installed.version if installed is not None else "0+unknown"


__version__: Final = _version()
