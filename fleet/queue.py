"""Enqueueing Celery tasks after commit, without failing the committed write.

A task is enqueued once its transaction has committed. By then the write is
the truth: a broker that cannot be reached must not turn it into a 500 (a
client would retry and write twice). Every task enqueued this way has a
fallback that finds the work undone later (the tick fans out a pending
rollout whose task was lost), so a failed enqueue is logged and dropped.
"""

import importlib
import logging
from functools import partial

from django.db import transaction

from .celery import app

logger = logging.getLogger(__name__)


def enqueue_on_commit(task_name: str, *args) -> None:
    """Send the task named `task_name` after the current transaction commits.

    By name: a service never imports its app's `tasks` module (which imports
    the services).
    """
    transaction.on_commit(partial(_send, task_name, args))


def _task(task_name: str):
    """The registered task, so that eager mode (the tests) runs it in-process.

    A task named `<app>.<name>` lives in `<app>/tasks.py`. A web process may
    not have imported that module yet (Celery's autodiscovery waits for a
    worker to start), and a bare signature of an unknown name would be sent
    to the broker even in eager mode. The project's app is named, not
    `current_app`, which is per thread and in a server's threads a blank app.
    """
    if task_name not in app.tasks:
        importlib.import_module(f"{task_name.split('.')[0]}.tasks")
    return app.tasks[task_name]


def _send(task_name: str, args: tuple) -> None:
    try:
        _task(task_name).delay(*args)
    except Exception:  # any broker failure: the write stays committed and answered
        logger.warning(
            "Could not enqueue %s%r; the work is picked up later by its fallback.",
            task_name,
            args,
            exc_info=True,
        )
