"""A producer: a web request or a script. It enqueues and reads results; it runs no job."""

import burrow
from burrow.errors import WaitTimeout
from shop.tasks import Order, charge_task, send_receipt_task

q = burrow.connect(config="conf/jobs.toml")  # the supervisor's database
ids = charge_task.enqueue_many(q, [Order(i, f"customer{i}@example.com", 100 * i) for i in (1, 2, 3)])
print("enqueued", ids)

try:
    for job_id in ids:
        receipt_job = charge_task.wait(q, job_id, timeout=30)  # the charge job's result
        print(send_receipt_task.wait(q, receipt_job, timeout=30))
except WaitTimeout:
    raise SystemExit("no result yet: is the supervisor running? python -m burrow.supervisor -c conf/jobs.toml")
