"""The tasks of Django's Tasks documentation (docs/topics/tasks.txt), as written there
(the import made to work on the backport too). Tasks of the same name are renamed
with a suffix; their bodies are the documentation's."""

from __future__ import annotations

from typing import Any

from django.core.mail import send_mail

from burrow.django.compat import tasks_module

task = tasks_module().task


@task
def email_users(emails: list[str], subject: str, message: str) -> int:
    return send_mail(subject=subject, message=message, from_email=None, recipient_list=emails)


@task(priority=2, queue_name="emails")
def email_users_emails_queue(emails: list[str], subject: str, message: str) -> int:
    return send_mail(subject=subject, message=message, from_email=None, recipient_list=emails)


@task(takes_context=True)
def email_users_with_context(context: Any, emails: list[str], subject: str, message: str) -> int:
    print(f"Attempt {context.attempt} to send user email. Task result id: {context.task_result.id}.")
    return send_mail(subject=subject, message=message, from_email=None, recipient_list=emails)


@task
def calculate_meaning_of_life() -> int:
    return 42


@task
def my_task(thing_num: int) -> int:
    return thing_num
