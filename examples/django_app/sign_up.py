"""A producer: what a view does. The task is enqueued in the view's transaction, and
its result read back from any process by its id."""

import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()

from django.db import transaction  # noqa: E402  (after setup, as Django needs)

from signups.tasks import send_welcome  # noqa: E402

with transaction.atomic():  # the task exists if and only if this commits
    result = send_welcome.enqueue(sys.argv[1] if len(sys.argv) > 1 else "ann@example.com")
print("enqueued", result.id)

deadline = time.monotonic() + 30
while not result.is_finished:  # SUCCESSFUL or FAILED
    if time.monotonic() > deadline:
        raise SystemExit("no result yet: is the worker running? python manage.py burrow_worker")
    time.sleep(0.1)
    result.refresh()
print(result.status, result.return_value)
