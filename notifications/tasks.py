"""Celery tasks of notification hooks: thin, by id, idempotent."""

from celery import shared_task
from . import services


@shared_task(name=services.DISPATCH_TASK)
def dispatch_events() -> int:
    # deliveries_dispatch has committed when it returns: the deliveries exist.
    created = services.deliveries_dispatch()
    for delivery_id in created:
        deliver.delay(delivery_id)
    # And the pending deliveries whose task was lost (a failed enqueue, a
    # killed worker), once their next attempt is overdue.
    for delivery_id in services.deliveries_due():
        deliver.delay(delivery_id)
    return len(created)


@shared_task(name=services.DELIVER_TASK, bind=True, max_retries=None, acks_late=True)
def deliver(self, delivery_id: str) -> bool:
    attempt = services.delivery_attempt(delivery_id=delivery_id)
    if attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in)
    return attempt.delivered
