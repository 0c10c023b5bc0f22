"""A small Django project with burrow as its task backend, on two databases at once:
"default" a SQLite file, "pg" a PostgreSQL database of the test run's own. The
paths come from the environment (tests/django/conftest.py sets them), so the test
process and the workers it starts (`manage.py burrow_worker`) share them."""

import importlib.util
import os

import django

import sqlalchemy as sa

# Django 6 has the Tasks framework; on 5.2 the backport is an app of its own.
TASKS_APP = None if importlib.util.find_spec("django.tasks") else "django_tasks"

SECRET_KEY = "burrow-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["burrow.django", "djshop", *([TASKS_APP] if TASKS_APP else [])]

_pg = sa.engine.make_url(os.environ.get("BURROW_DJANGO_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("BURROW_DJANGO_SQLITE", "/tmp/burrow-django.db")},
    "pg": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _pg.database,
        "USER": _pg.username or "",
        "PASSWORD": _pg.password or "",
        "HOST": _pg.host or "",
        "PORT": str(_pg.port or ""),
    },
}

_QUEUES = ["default", "mail", "emails"]  # "emails": the queue of Django's documentation examples
TASKS = {
    "default": {"BACKEND": "burrow.django.BurrowBackend", "QUEUES": _QUEUES, "OPTIONS": {"DATABASE": "default"}},
    "pg": {"BACKEND": "burrow.django.BurrowBackend", "QUEUES": _QUEUES, "OPTIONS": {"DATABASE": "pg"}},
    # A database of its own, by DSN (here the same SQLite file, so one worker serves both).
    "by_dsn": {
        "BACKEND": "burrow.django.BurrowBackend",
        "QUEUES": _QUEUES,
        "OPTIONS": {"DSN": "sqlite:///" + os.environ.get("BURROW_DJANGO_SQLITE", "/tmp/burrow-django.db")},
    },
    # The jobs in a PostgreSQL schema of their own, in the "pg" database.
    "pg_schema": {"BACKEND": "burrow.django.BurrowBackend", "QUEUES": _QUEUES, "OPTIONS": {"DATABASE": "pg", "SCHEMA": "jobs"}},
    "retrying": {
        "BACKEND": "burrow.django.BurrowBackend",
        "QUEUES": [],
        "OPTIONS": {"DATABASE": "default", "MAX_RETRIES": 2},
    },
}

LOGGING = {"version": 1, "disable_existing_loggers": False}

# The documentation examples send mail: to files, which the tests read (MAILERS from
# Django 6.1 on, which deprecates EMAIL_BACKEND).
_MAIL = os.path.join(os.path.dirname(os.environ.get("BURROW_DJANGO_SQLITE", "/tmp/burrow-django.db")), "mail")
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.filebased.EmailBackend", "OPTIONS": {"file_path": _MAIL}}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = _MAIL
