"""A newsletter: mail goes out through a pool of its own, a report is built every
few seconds by a periodic job, and a slow report never holds up the mail."""

import datetime as dt
from dataclasses import dataclass

import burrow


@dataclass
class Mail:
    to: str
    subject: str


@dataclass
class Digest:
    period: str


def send(mail: Mail) -> str:
    return f"sent {mail.subject!r} to {mail.to}"


def build_digest(digest: Digest) -> None:
    # The periodic job of this slot, once however many supervisors run; it fans out.
    slot = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    send_task.enqueue_many(app.q, [Mail(to, f"{digest.period} digest {slot}") for to in SUBSCRIBERS])


SUBSCRIBERS = ["ann@example.com", "bob@example.com"]

# The mail pool serves queue "mail"; at most 4 sends run at once across all hosts.
send_task = burrow.define_result_task("newsletter.send", send, burrow.with_queue("mail"), burrow.with_concurrency(4))
digest_task = burrow.define_task("newsletter.digest", build_digest, burrow.with_queue("reports"))


class Newsletter:
    q: burrow.Queue

    def register_jobs(self, q: burrow.Queue) -> None:
        self.q = q
        send_task.register(q)
        digest_task.register(q)
        burrow.periodic(digest_task, Digest("hourly"), every=dt.timedelta(hours=1)).register(q)


app = Newsletter()
