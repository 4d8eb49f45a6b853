"""Enqueueing Celery tasks after commit, without failing the committed write.

A task is enqueued once its transaction has committed. By then the write is
the truth: a broker that cannot be reached must not turn it into a 500 (a
client would retry and write twice). Every task enqueued this way has a
fallback that finds the work undone later (the tick fans out a pending
rollout whose task was lost), so a failed enqueue is logged and dropped.
"""

import logging
from functools import partial

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task_name: str, *args) -> None:
    """Send the task named `task_name` after the current transaction commits.

    By name: a service never imports its app's `tasks` module (which imports
    the services). A registered task's signature still honours eager mode.
    """
    transaction.on_commit(partial(_send, task_name, args))


def _send(task_name: str, args: tuple) -> None:
    try:
        current_app.signature(task_name, args=args).delay()
    except Exception:  # any broker failure: the write stays committed and answered
        logger.warning(
            "Could not enqueue %s%r; the work is picked up later by its fallback.",
            task_name,
            args,
            exc_info=True,
        )
