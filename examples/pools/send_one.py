"""Send one mail now, from any process: the mail pool picks it up."""

import sys

import burrow
from newsletter.tasks import Mail, send_task

q = burrow.connect(config="conf/jobs.toml")
job_id = send_task.enqueue(q, Mail(sys.argv[1] if len(sys.argv) > 1 else "you@example.com", "hello"))
print(send_task.wait(q, job_id, timeout=30))
