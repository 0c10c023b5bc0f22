"""The shop's jobs. Workers run them; producers import this module for the definitions."""

from dataclasses import dataclass

import burrow


@dataclass
class Order:
    id: int
    email: str
    total_cents: int


@dataclass
class Receipt:
    order_id: int
    email: str


def send_receipt(receipt: Receipt) -> str:
    # A real shop sends mail here; an exception would retry the job (5 times).
    return f"receipt for order {receipt.order_id} sent to {receipt.email}"


send_receipt_task = burrow.define_result_task("shop.send_receipt", send_receipt, burrow.with_max_retries(5))


def charge(order: Order) -> int:
    if order.total_cents <= 0:
        raise burrow.PermanentError(f"order {order.id} has nothing to charge")  # no retries
    print(f"charging {order.total_cents} cents for order {order.id}")
    # A job enqueues another on the queue its task was registered on: in a
    # worker, that worker's own connection. Its result is the new job's id.
    return send_receipt_task.enqueue(app.q, Receipt(order.id, order.email))


charge_task = burrow.define_result_task("shop.charge", charge, burrow.with_priority(10))


class Shop:
    """What the supervisor loads: conf/jobs.toml names it as "shop.tasks:app"."""

    q: burrow.Queue

    def register_jobs(self, q: burrow.Queue) -> None:
        self.q = q
        charge_task.register(q)
        send_receipt_task.register(q)


app = Shop()
