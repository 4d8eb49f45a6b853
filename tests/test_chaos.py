"""Failures a datacenter has: a Celery worker killed with SIGKILL in the
middle of a fan-out and in the middle of starting a batch (a real worker
process on the real Redis broker), and two ticks at once over a batch of
2,000 devices. After each, the invariants hold: one row per device, no
device scheduled twice, `target_version` only grows (by one per
scheduling), the rollout's counts match its rows.

A killed worker's transaction is rolled back by PostgreSQL; the work is done
again by the next tick, which fans out a pending rollout nobody filled and
starts a batch that is due (README, Decisions: a killed worker)."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager

import psycopg
import pytest
from django.conf import settings
from django.utils import timezone

from devices.models import Device
from rollouts.models import DeviceStatus, EventType, Rollout, RolloutDevice
from rollouts.selectors import with_counts
from rollouts.serializers import RolloutSerializer
from rollouts.services import rollout_create_for_push
from rollouts.tasks import advance_rollouts

from . import processes
from .concurrency import run_together
from .rollout_helpers import IMAGE, batch_device_ids, build_fleet, policy, push, report

pytestmark = pytest.mark.django_db(transaction=True)

# How long a test waits for a fresh worker to redo the lost work.
RECOVERY_SECONDS = 60


def versions() -> dict[int, int]:
    return dict(Device.objects.values_list("pk", "target_version"))


def assert_invariants(rollout: Rollout, before: dict[int, int], devices: int) -> None:
    rows = RolloutDevice.objects.filter(rollout=rollout)
    # One row per device (each device here has one service of the image).
    assert rows.count() == devices
    assert rows.values("device_id").distinct().count() == devices
    # Scheduled at most once: one event, and target_version grew by one.
    scheduled_events = Counter(
        rollout.events.filter(event_type=EventType.DEVICE_SCHEDULED).values_list(
            "device_uuid", flat=True
        )
    )
    assert max(scheduled_events.values(), default=0) <= 1
    scheduled = set(rows.exclude(scheduled_at=None).values_list("device_id", flat=True))
    assert len(scheduled) == sum(scheduled_events.values())
    after = versions()
    for device_id, version in before.items():
        assert after[device_id] == version + (device_id in scheduled), device_id
    # The rollout's numbers are its rows'.
    shown = RolloutSerializer(with_counts(Rollout.objects).get(pk=rollout.pk)).data
    counted = Counter(rows.values_list("status", flat=True))
    assert shown["counts"] == {status: counted[status] for status in DeviceStatus.values}
    assert shown["total_devices"] == devices


@contextmanager
def celery_worker(tmp_path, name: str):
    """A worker process (solo pool: the process that runs the task) on the
    test database and Redis; killed if still alive at the end."""
    env = {
        **os.environ,
        "DATABASE_URL": processes.test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "ENV_FILE": "",
    }
    log = (tmp_path / f"{name}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "fleet", "worker", "--pool", "solo",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


@contextmanager
def services_locked(device_ids):
    """Another session holds the row locks of these devices' services, so a
    worker that retargets them waits inside its transaction: the test knows
    the worker is mid-way when it kills it."""
    with psycopg.connect(processes.test_database_url()) as connection:
        connection.execute(
            "SELECT id FROM devices_deviceservice WHERE device_id = ANY(%s) ORDER BY id FOR UPDATE",
            [list(device_ids)],
        )
        yield connection
        connection.rollback()


def waiting_backend() -> int | None:
    """The pid of the session (the worker's) waiting for those locks. Asked
    on a connection of its own: within a transaction, PostgreSQL keeps
    showing the activity it saw first."""
    with psycopg.connect(processes.test_database_url(), autocommit=True) as connection:
        row = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE '%%devices_deviceservice%%'"
        ).fetchone()
        return row[0] if row else None


def backend_gone(pid: int) -> bool:
    with psycopg.connect(processes.test_database_url(), autocommit=True) as connection:
        row = connection.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        return row is None


def kill_mid_way(tmp_path, device_ids, start_work) -> None:
    """Start a worker, let `start_work` hand it a task, kill -9 the worker
    while the task waits in its transaction, then let PostgreSQL end it."""
    with services_locked(device_ids), celery_worker(tmp_path, "killed") as worker:
        start_work()
        pid = processes.eventually(waiting_backend, seconds=RECOVERY_SECONDS)
        assert pid, (tmp_path / "killed.log").read_text()[-3000:]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
    # The locks are released: the orphaned statement ends, finds its client
    # gone, and its transaction is rolled back.
    assert processes.eventually(lambda: backend_gone(pid), seconds=60)


def ticks_until(tmp_path, done) -> bool:
    """A fresh worker, sent a tick every second (as beat would), until `done`."""
    with celery_worker(tmp_path, "recovering"):

        def tick_and_check():
            if done():
                return True
            advance_rollouts.delay()
            return False

        return bool(processes.eventually(tick_and_check, seconds=RECOVERY_SECONDS, interval=1))


def test_a_fan_out_killed_mid_way_is_done_once_by_the_next_tick(tmp_path, queued_tasks):
    build_fleet(400)
    policy(batch_delay_minutes=0)
    before = versions()
    rollout = None

    def push_to_the_worker():
        nonlocal rollout
        # Committed: the fan-out task is in Redis, and the worker takes it.
        rollout = rollout_create_for_push(image=IMAGE, tag="v2.0.0", digest=None).rollout

    kill_mid_way(tmp_path, before, push_to_the_worker)
    assert Rollout.objects.get(pk=rollout.pk).fanned_out_at is None
    assert not RolloutDevice.objects.filter(rollout=rollout).exists()
    assert versions() == before

    recovered = ticks_until(
        tmp_path, lambda: Rollout.objects.get(pk=rollout.pk).fanned_out_at is not None
    )
    assert recovered, (tmp_path / "recovering.log").read_text()
    rollout.refresh_from_db()
    assert (rollout.status, rollout.current_batch) == ("in_progress", 1)
    assert RolloutDevice.objects.filter(rollout=rollout, status="scheduled").count() == 40
    assert_invariants(rollout, before, devices=400)


def test_a_batch_start_killed_mid_way_is_done_once_by_the_next_tick(tmp_path, queued_tasks):
    build_fleet(400)
    policy(batch_delay_minutes=0)
    rollout = push(now=timezone.now())
    first = batch_device_ids(rollout, 1)
    report(first, tag="v2.0.0", at=timezone.now())
    before = versions()
    second = batch_device_ids(rollout, 2)

    kill_mid_way(tmp_path, second, advance_rollouts.delay)
    rollout.refresh_from_db()
    assert RolloutDevice.objects.filter(rollout=rollout, batch=2, status="pending").count() == 160
    assert all(versions()[device_id] == before[device_id] for device_id in second)

    def second_batch_started():
        return RolloutDevice.objects.filter(rollout=rollout, batch=2, status="scheduled").count() == 160

    recovered = ticks_until(tmp_path, second_batch_started)
    assert recovered, (tmp_path / "recovering.log").read_text()
    rollout.refresh_from_db()
    assert rollout.current_batch == 2
    # Batch 1 was judged before or after the kill, never twice.
    assert rollout.events.filter(event_type=EventType.BATCH_COMPLETED).count() == 1
    assert rollout.events.filter(event_type=EventType.BATCH_STARTED).count() == 2
    # Batch 1's devices were scheduled by the push, before `before` was taken.
    assert_invariants(rollout, {**before, **{d: before[d] - 1 for d in first}}, devices=400)


def test_two_ticks_at_once_start_and_judge_a_2000_device_batch_once():
    # Batch 1 takes 10 %, rounded up: 223 devices; batch 2 the other 2,000.
    build_fleet(2223)
    policy(batch_delay_minutes=0, batch_percentages=[10, 100])
    start = timezone.now()
    before = versions()
    rollout = push(now=start)
    report(batch_device_ids(rollout, 1), tag="v2.0.0", at=start)
    # Both ticks judge batch 1 and try to start batch 2: one of them does.
    run_together(*[lambda: advance_rollouts()] * 2)
    rollout.refresh_from_db()
    second = batch_device_ids(rollout, 2)
    assert len(second) == 2000
    assert RolloutDevice.objects.filter(rollout=rollout, batch=2, status="scheduled").count() == 2000
    assert_invariants(rollout, before, devices=2223)

    report(second, tag="v2.0.0", at=timezone.now())
    run_together(*[lambda: advance_rollouts()] * 2)
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert rollout.events.filter(event_type=EventType.ROLLOUT_COMPLETED).count() == 1
    assert RolloutDevice.objects.filter(rollout=rollout, status="healthy").count() == 2223
    assert_invariants(rollout, before, devices=2223)
