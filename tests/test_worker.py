"""A real Celery worker on the real Redis broker: what the tests elsewhere run
eagerly (in-process, on commit) is here sent through the broker and run by a
worker process, as in production."""

import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from rollouts.models import Rollout, RolloutDevice
from rollouts.services import rollout_create_for_push
from rollouts.tasks import advance_rollouts

from .rollout_helpers import IMAGE, build_fleet, policy, report, scheduled_device_ids

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(queued_tasks):
    """A worker process on the test database and the test Redis."""
    database = connection.settings_dict
    login = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{login}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "ENV_FILE": "",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "fleet", "worker", "--pool", "solo", "--loglevel", "WARNING"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    process.terminate()
    process.wait(timeout=30)


def _eventually(check, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_it_fans_out_a_push_and_advances_rollouts_in_a_worker_process(worker):
    build_fleet(30)
    policy(batch_delay_minutes=0)
    rollout = rollout_create_for_push(image=IMAGE, tag="v2.0.0", digest=None).rollout
    # Committed (no test transaction here), so the fan-out task is in Redis now.
    fanned_out = _eventually(lambda: Rollout.objects.get(pk=rollout.pk).fanned_out_at is not None)
    assert fanned_out, worker.stderr.read() if worker.poll() is not None else "no fan-out"
    assert RolloutDevice.objects.filter(rollout=rollout, status="scheduled").count() == 3

    report(scheduled_device_ids(rollout), tag="v2.0.0", at=timezone.now())
    advance_rollouts.delay()
    # The worker's tick judges batch 1 healthy and, with no delay, starts batch 2.
    assert _eventually(lambda: Rollout.objects.get(pk=rollout.pk).current_batch == 2)
    assert RolloutDevice.objects.filter(rollout=rollout, status="healthy").count() == 3
    assert RolloutDevice.objects.filter(rollout=rollout, status="scheduled").count() == 12
