"""A Django project whose tasks burrow stores and runs, in the project's own database."""

import importlib.util
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "an example: set your own"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django 6 has the Tasks framework built in; on Django 5.2 the django-tasks backport
# is an app of its own.
TASKS_BACKPORT = [] if importlib.util.find_spec("django.tasks") else ["django_tasks"]
INSTALLED_APPS = ["burrow.django", "signups", *TASKS_BACKPORT]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}

TASKS = {
    "default": {
        "BACKEND": "burrow.django.BurrowBackend",
        "QUEUES": ["default", "mail"],
        "OPTIONS": {"DATABASE": "default", "MAX_RETRIES": 2},  # the jobs live beside the app's tables
    }
}
