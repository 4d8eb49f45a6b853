"""Concurrent ticks (and a tick racing the fan-out task) on real PostgreSQL.

Each thread has its own database connection, so the row lock taken by one
tick is really contended by the other. Both start at a Barrier to overlap.
Whatever the interleaving, the invariants below must hold.
"""

from collections import Counter

import pytest
from django.utils import timezone

from rollouts.models import Rollout, RolloutDevice
from rollouts.services import rollout_create_for_push, rollouts_advance_all
from rollouts.tasks import fan_out_rollout

from .concurrency import run_together, two_ticks_at_once
from .rollout_helpers import (
    IMAGE,
    build_fleet,
    event_counts,
    minutes,
    policy,
    push,
    report,
    scheduled_device_ids,
    seconds,
    target_versions,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_never_schedules_a_device_twice_nor_skips_a_batch_under_concurrent_ticks():
    build_fleet(300)
    policy(batch_delay_minutes=30)
    # With transaction=True the fan-out task runs on commit, at the real time:
    # the virtual clock starts from it.
    start = timezone.now()
    rollout = push(now=start)
    now = start
    for batch in (1, 2, 3):
        rollout.refresh_from_db()
        assert (rollout.status, rollout.current_batch) == ("in_progress", batch)
        now += minutes(1)
        report(scheduled_device_ids(rollout), tag="v2.0.0", at=now)
        for _ in range(2):
            two_ticks_at_once(now)  # judge; the batch is finished
        two_ticks_at_once(now + minutes(30) - seconds(1))
        now += minutes(30)
        for _ in range(2):
            two_ticks_at_once(now)  # the next batch starts, once
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert target_versions() == Counter({2: 300})
    events = event_counts(rollout)
    assert (events["batch_started"], events["batch_completed"]) == (3, 3)
    assert events["rollout_completed"] == 1
    assert (events["device_scheduled"], events["health_check_passed"]) == (300, 300)
    scheduled = rollout.events.filter(event_type="image.device_scheduled")
    assert scheduled.values("device_uuid").distinct().count() == 300
    sizes = Counter(RolloutDevice.objects.filter(rollout=rollout).values_list("batch", flat=True))
    assert sizes == Counter({1: 30, 2: 120, 3: 150})
    # Each batch was scheduled by one statement, at one moment.
    for batch in (1, 2, 3):
        rows = RolloutDevice.objects.filter(rollout=rollout, batch=batch)
        assert rows.values("scheduled_at").distinct().count() == 1


def test_it_schedules_devices_once_when_ticks_race_with_zero_delay():
    build_fleet(200)
    policy(batch_delay_minutes=0)
    start = timezone.now()
    rollout = push(now=start)
    now = start
    for _ in range(3):
        now += minutes(1)
        report(scheduled_device_ids(rollout), tag="v2.0.0", at=now)
        two_ticks_at_once(now)  # judge, finish and start the next batch in one pass
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert target_versions() == Counter({2: 200})
    events = event_counts(rollout)
    assert (events["batch_started"], events["device_scheduled"]) == (3, 200)


def test_it_fills_a_rollout_once_when_the_fan_out_task_races_a_tick(queued_tasks):
    build_fleet(200)
    policy()
    for round_number, tag in enumerate(["v2.0.0", "v3.0.0", "v4.0.0"]):
        # Each push supersedes the previous rollout and takes all 200 devices.
        outcome = rollout_create_for_push(image=IMAGE, tag=tag, digest=None)
        rollout = outcome.rollout
        assert Rollout.objects.get(pk=rollout.pk).fanned_out_at is None
        run_together(
            lambda: fan_out_rollout(str(rollout.pk)),
            lambda: rollouts_advance_all(now=timezone.now()),
        )
        rollout.refresh_from_db()
        assert (rollout.status, rollout.current_batch) == ("in_progress", 1)
        assert rollout.total_devices == 200
        assert RolloutDevice.objects.filter(rollout=rollout).count() == 200
        events = event_counts(rollout)
        assert (events["rollout_started"], events["batch_started"]) == (1, 1)
        assert events["device_scheduled"] == 20
        # Batch 1 is the same 20 devices each time (ordered by uuid): each
        # round moved them exactly once more, and nobody else.
        assert target_versions() == Counter({round_number + 2: 20, 1: 180})
