"""Django tasks: defined with Django's own @task; burrow's worker runs them."""

try:
    from django.tasks import task  # Django 6
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task


@task(queue_name="mail", priority=10)
def send_welcome(email: str) -> str:
    # A real site sends mail here; an exception fails this attempt (retried twice).
    return f"welcome mail sent to {email}"
