"""One-shot messages after an action ("Job 12 is queued again."), across its redirect.

An action answers with a 303 to the page it came from and a short-lived cookie
(HttpOnly, SameSite=Strict, the admin's path only) holding a message *code* and a
number; the next page shows the message and deletes the cookie. The sentence
itself is looked up here, so a forged cookie can at worst show one of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from burrow.admin import paths

COOKIE: Final = "burrow_flash"
MAX_AGE_S: Final = 60  # long enough to follow the redirect, short enough to be forgotten
_VALUE_RE: Final = re.compile(r"([a-z_]{1,30})\.(\d{1,19})")

# code -> (kind, sentence with {n}); kind is "ok" or "error" (the message's colour).
MESSAGES: Final[dict[str, tuple[str, str]]] = {
    "retried": ("ok", "Job {n} is queued again."),
    "not_retried": ("error", "Job {n} was not retried: only failed or cancelled jobs can be."),
    "cancelled": ("ok", "Job {n} is cancelled (a running one is stopped by its supervisor within seconds)."),
    "not_cancelled": ("error", "Job {n} was not cancelled: it has finished."),
    "deleted": ("ok", "Job {n} is deleted."),
    "not_deleted": ("error", "Job {n} was not deleted: it is running."),
    "missing": ("error", "Job {n} does not exist (any more)."),
    "retried_all": ("ok", "{n} failed job(s) queued again."),
    "unconfirmed": ("error", "Nothing was done: the action needs its confirmation."),
    "ran_now": ("ok", "Job {n} is due now."),
    "not_ran_now": ("error", "Job {n} was not made due: only a queued job due later can be."),
    "paused": ("ok", "The queue is paused: no supervisor claims its jobs until it is resumed."),
    "resumed": ("ok", "The queue is resumed."),
}


@dataclass(frozen=True, slots=True)
class Flash:
    kind: str
    text: str


def put(response: Response, request: Request, code: str, n: int = 0) -> None:
    """Leave message ``code`` (a key of MESSAGES) for the next page this browser shows."""
    assert code in MESSAGES, code
    paths.set_cookie(response, request, COOKIE, f"{code}.{n}", max_age=MAX_AGE_S)


def take(request: Request) -> Flash | None:
    """The message left for this page, if any (:func:`clear` it on the response)."""
    match = _VALUE_RE.fullmatch(request.cookies.get(COOKIE, ""))
    if match is None or match[1] not in MESSAGES:
        return None
    kind, sentence = MESSAGES[match[1]]
    return Flash(kind, sentence.format(n=int(match[2])))


def clear(response: Response, request: Request) -> None:
    paths.delete_cookie(response, request, COOKIE)
