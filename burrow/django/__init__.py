"""burrow as a backend of Django's Tasks framework (``django.tasks``, or the
``django-tasks`` backport on Django 5.2), with its worker (``manage.py burrow_worker``).

Settings::

    INSTALLED_APPS = [..., "burrow.django"]
    TASKS = {"default": {"BACKEND": "burrow.django.BurrowBackend", "OPTIONS": {"DATABASE": "default"}}}

Nothing here is imported by ``import burrow``; the backend class loads when Django
asks for it (``BurrowBackend`` is looked up lazily, so listing the app does not
import the Tasks framework before Django's app registry is ready).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from burrow.django.backend import BurrowBackend, BurrowTask

__all__ = ["BurrowBackend", "BurrowTask"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from burrow.django import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'burrow.django' has no attribute {name!r}")
