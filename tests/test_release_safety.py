"""Release safety (CONTRACT section 8) in the engine, on PostgreSQL, with
time driven through `now`: the ramp inside a batch, offline devices
deferred, retries."""

import random
from collections import Counter

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import Device, DeviceService
from rollouts.models import Rollout, RolloutDevice
from rollouts.selectors import with_counts

from .rollout_helpers import (
    T0,
    build_fleet,
    event_counts,
    minutes,
    policy,
    push,
    report,
    scheduled_device_ids,
    seconds,
    statuses,
    tick,
)

pytestmark = pytest.mark.django_db


def released(rollout) -> int:
    """Devices that had the release at some point (deferred ones never took it)."""
    rows = RolloutDevice.objects.filter(rollout=rollout, attempts__gt=0)
    return rows.exclude(status="deferred").count()


def healthy(rollout) -> int:
    return RolloutDevice.objects.filter(rollout=rollout, status="healthy").count()


def counts(rollout) -> dict:
    annotated = with_counts(Rollout.objects.filter(pk=rollout.pk)).get()
    return {"deferred": annotated.count_deferred, "failed": annotated.count_failed}


def seen(device_ids, at) -> None:
    """The devices polled at `at`."""
    Device.objects.filter(pk__in=list(device_ids)).update(last_seen_at=at)


# --- ramp ------------------------------------------------------------------


def test_it_keeps_the_ramp_bound_at_every_tick_until_the_rollout_completes():
    build_fleet(1000)
    policy(ramp_initial=10, ramp_factor=2, batch_delay_minutes=0)
    rollout = push(now=T0)
    draw = random.Random(3)
    now = T0
    for _ in range(200):
        now += seconds(15)
        # A random share of the devices in flight turns healthy each tick.
        in_flight = scheduled_device_ids(rollout)
        report(draw.sample(in_flight, k=(len(in_flight) + 1) // 2), tag="v2.0.0", at=now)
        tick(now)
        tick(now + seconds(1))
        rollout.refresh_from_db()
        assert released(rollout) <= 10 + 2 * healthy(rollout)
        if rollout.status == "completed":
            break
    assert rollout.status == "completed"
    assert statuses(rollout) == Counter({("healthy", ""): 1000})


def test_a_bad_release_reaches_at_most_ramp_initial_devices_and_pauses():
    build_fleet(1000)
    policy(ramp_initial=10, ramp_factor=2)
    rollout = push(now=T0)
    assert len(scheduled_device_ids(rollout)) == 10
    now = T0
    for _ in range(10):
        now += seconds(15)
        report(scheduled_device_ids(rollout), tag="v2.0.0", status="exited", health="none", at=now)
        tick(now)
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    assert RolloutDevice.objects.filter(rollout=rollout, attempts__gt=0).count() == 10
    assert statuses(rollout) == Counter({("rolled_back", "crashed"): 10, ("pending", ""): 990})


def test_it_pauses_on_the_verdicts_at_hand_when_ramp_initial_is_below_min_failure_samples():
    build_fleet(100)
    policy(ramp_initial=2, ramp_factor=2, min_failure_samples=5)
    rollout = push(now=T0)
    report(scheduled_device_ids(rollout), tag="v2.0.0", health="unhealthy", at=T0 + seconds(30))
    tick(T0 + seconds(30))  # updated
    tick(T0 + seconds(45))  # failed: 2 of 2, nothing else released, so judged
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    assert "2 failed of 2 verdicts" in rollout.status_reason
    assert RolloutDevice.objects.filter(rollout=rollout, attempts__gt=0).count() == 2


def test_ramp_initial_null_releases_each_batch_whole():
    build_fleet(1000)
    policy(ramp_initial=None)
    rollout = push(now=T0)
    assert len(scheduled_device_ids(rollout)) == 100
    assert event_counts(rollout)["device_scheduled"] == 100


def test_it_releases_devices_seen_recently_before_devices_that_look_offline():
    build_fleet(100)
    policy(ramp_initial=4, ramp_factor=2, batch_percentages=[100])
    devices = list(Device.objects.order_by("pk").values_list("pk", flat=True))
    online = devices[-4:]
    seen(devices, T0 - minutes(60 * 24))
    seen(online, T0 - seconds(20))
    rollout = push(now=T0)
    assert sorted(scheduled_device_ids(rollout)) == sorted(online)


def test_a_ramped_tick_costs_the_same_queries_for_100_and_5000_devices():
    def queries_of_a_ramped_tick(devices: int) -> int:
        build_fleet(devices)
        policy(ramp_initial=10, ramp_factor=2, batch_percentages=[100])
        rollout = push(now=T0)
        report(scheduled_device_ids(rollout)[:5], tag="v2.0.0", at=T0 + seconds(20))
        tick(T0 + seconds(20))  # updated
        with CaptureQueriesContext(connection) as context:
            tick(T0 + seconds(35))  # 5 healthy: 10 more released
        assert released(rollout) == 20
        Rollout.objects.all().delete()
        Device.objects.all().delete()
        return len(context.captured_queries)

    assert queries_of_a_ramped_tick(100) == queries_of_a_ramped_tick(5000)


# --- offline devices -------------------------------------------------------


def test_offline_devices_are_deferred_do_not_pause_and_the_rollout_completes():
    build_fleet(20)
    policy(update_strategy="auto", health_check_timeout_seconds=120)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    offline, online = ids[:6], ids[6:]  # 30 %: over the 20 % threshold as failures
    report(online, tag="v2.0.0", at=T0 + seconds(30))
    tick(T0 + seconds(30))
    tick(T0 + seconds(45))
    tick(T0 + seconds(120))
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert statuses(rollout) == Counter({("healthy", ""): 14, ("deferred", ""): 6})
    assert counts(rollout)["deferred"] == 6
    assert event_counts(rollout)["device_deferred"] == 6
    assert "rollout_paused" not in event_counts(rollout)


def test_a_deferred_device_that_polls_again_is_judged_without_reopening_the_rollout():
    build_fleet(10)
    policy(update_strategy="auto", health_check_timeout_seconds=120)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    back, away = ids[0], ids[1]
    report(ids[2:], tag="v2.0.0", at=T0 + seconds(30))
    for at in (30, 45, 120):
        tick(T0 + seconds(at))
    rollout.refresh_from_db()
    assert rollout.status == "completed"

    seen([back], T0 + minutes(60))
    tick(T0 + minutes(60) + seconds(5))
    row = RolloutDevice.objects.get(rollout=rollout, device_id=back)
    # A fresh timer: the timeout runs from its return, not from its release.
    assert (row.status, row.timer_started_at) == ("scheduled", T0 + minutes(60) + seconds(5))
    tick(T0 + minutes(61))
    assert RolloutDevice.objects.get(pk=row.pk).status == "scheduled"
    report([back], tag="v2.0.0", at=T0 + minutes(61))
    tick(T0 + minutes(61) + seconds(15))
    tick(T0 + minutes(61) + seconds(30))
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert statuses(rollout) == Counter({("healthy", ""): 9, ("deferred", ""): 1})
    assert counts(rollout)["deferred"] == 1
    assert RolloutDevice.objects.get(rollout=rollout, device_id=away).status == "deferred"


def test_a_completed_rollout_whose_deferred_devices_stay_offline_costs_a_tick_nothing():
    build_fleet(10)
    policy(update_strategy="auto", health_check_timeout_seconds=120)
    rollout = push(now=T0)
    report(sorted(scheduled_device_ids(rollout))[2:], tag="v2.0.0", at=T0 + seconds(30))
    for at in (30, 45, 120):
        tick(T0 + seconds(at))
    with CaptureQueriesContext(connection) as idle:
        tick(T0 + minutes(30))
    Rollout.objects.all().delete()
    with CaptureQueriesContext(connection) as empty:
        tick(T0 + minutes(30))
    assert len(idle.captured_queries) == len(empty.captured_queries) == 2


def test_a_deferred_device_taken_over_by_a_newer_rollout_is_not_judged_by_the_old_one():
    build_fleet(10)
    policy(update_strategy="auto", health_check_timeout_seconds=120)
    old = push(now=T0)
    ids = sorted(scheduled_device_ids(old))
    report(ids[1:], tag="v2.0.0", at=T0 + seconds(30))
    for at in (30, 45, 120):
        tick(T0 + seconds(at))
    new = push("v3.0.0", now=T0 + minutes(10))
    assert RolloutDevice.objects.get(rollout=new, device_id=ids[0]).status == "scheduled"

    seen([ids[0]], T0 + minutes(20))
    tick(T0 + minutes(20))
    tick(T0 + minutes(30))
    row = RolloutDevice.objects.get(rollout=old, device_id=ids[0])
    assert (row.status, row.failure_reason) == ("skipped", "")
    old.refresh_from_db()
    assert old.status == "completed"


def test_a_device_back_from_deferral_that_goes_silent_fails_with_timeout():
    build_fleet(10)
    policy(update_strategy="auto", health_check_timeout_seconds=120)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[1:], tag="v2.0.0", at=T0 + seconds(30))
    for at in (30, 45, 120):
        tick(T0 + seconds(at))
    seen([ids[0]], T0 + minutes(10))
    tick(T0 + minutes(10))
    tick(T0 + minutes(12))
    row = RolloutDevice.objects.get(rollout=rollout, device_id=ids[0])
    assert (row.status, row.failure_reason) == ("failed", "timeout")


def test_offline_devices_do_not_hold_their_batch():
    build_fleet(100)
    policy(batch_percentages=[10, 100], batch_delay_minutes=0, health_check_timeout_seconds=120)
    rollout = push(now=T0)
    batch_one = sorted(scheduled_device_ids(rollout))
    report(batch_one[2:], tag="v2.0.0", at=T0 + seconds(30))
    for at in (30, 45, 120):
        tick(T0 + seconds(at))
    rollout.refresh_from_db()
    assert rollout.current_batch == 2
    assert statuses(rollout, batch=1) == Counter({("healthy", ""): 8, ("deferred", ""): 2})


def test_a_device_that_polled_its_target_but_gives_no_verdict_fails_with_timeout():
    build_fleet(10)
    policy(update_strategy="auto", health_check_timeout_seconds=120)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    seen([ids[0]], T0 + seconds(40))
    report(ids[1:], tag="v2.0.0", at=T0 + seconds(30))
    for at in (30, 45, 120):
        tick(T0 + seconds(at))
    row = RolloutDevice.objects.get(rollout=rollout, device_id=ids[0])
    assert (row.status, row.failure_reason) == ("failed", "timeout")


def test_a_breach_rolls_back_deferred_devices_too():
    build_fleet(10)
    policy(update_strategy="auto", health_check_timeout_seconds=120, min_failure_samples=1)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    # Half of them took the release and are stuck downloading; the rest never polled.
    report(ids[:5], tag="v2.0.0", status="downloading", health="none", at=T0 + seconds(30))
    tick(T0 + seconds(30))
    tick(T0 + seconds(120))
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    assert statuses(rollout) == Counter({("rolled_back", "timeout"): 5, ("rolled_back", ""): 5})
    targets = Counter(DeviceService.objects.values_list("target_tag", flat=True))
    assert targets == Counter({"v1.0.0": 10})


# --- retries ---------------------------------------------------------------


def _version(device_id) -> int:
    return Device.objects.get(pk=device_id).target_version


def test_it_retries_a_failed_device_with_a_new_target_version_and_judges_the_retry():
    build_fleet(10)
    policy(update_strategy="auto", max_retries=1)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    flaky = ids[0]
    report(ids[1:], tag="v2.0.0", at=T0 + seconds(30), towards=2)
    report([flaky], tag="v2.0.0", status="exited", health="none", at=T0 + seconds(30), towards=2)
    tick(T0 + seconds(30))
    row = RolloutDevice.objects.get(rollout=rollout, device_id=flaky)
    assert (row.status, row.attempts, row.failure_reason) == ("scheduled", 2, "")
    assert _version(flaky) == 3
    retried = rollout.events.get(event_type="image.device_retried")
    assert retried.data["failure_reason"] == "crashed"
    # A late report of the failed attempt (towards version 2) judges nothing.
    report([flaky], tag="v2.0.0", status="exited", health="none", at=T0 + seconds(40), towards=2)
    tick(T0 + seconds(45))
    assert RolloutDevice.objects.get(pk=row.pk).status == "scheduled"
    report([flaky], tag="v2.0.0", at=T0 + seconds(60), towards=3)
    tick(T0 + seconds(60))
    tick(T0 + seconds(75))
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert statuses(rollout) == Counter({("healthy", ""): 10})
    assert event_counts(rollout)["device_failed"] == 0


def test_it_stops_retrying_after_max_retries():
    build_fleet(10)
    policy(update_strategy="auto", max_retries=2, max_failure_rate=0.5)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    bad = ids[0]
    report(ids[1:], tag="v2.0.0", at=T0 + seconds(30), towards=2)
    now = T0 + seconds(30)
    for version in (2, 3, 4):
        report([bad], tag="v2.0.0", status="exited", health="none", at=now, towards=version)
        tick(now)
        now += seconds(15)
    row = RolloutDevice.objects.get(rollout=rollout, device_id=bad)
    assert (row.status, row.failure_reason, row.attempts) == ("failed", "crashed", 3)
    assert _version(bad) == 4
    assert event_counts(rollout)["device_retried"] == 2


def test_a_timed_out_retry_of_an_offline_device_is_deferred():
    build_fleet(10)
    policy(update_strategy="auto", max_retries=1, health_check_timeout_seconds=120)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[1:], tag="v2.0.0", at=T0 + seconds(30), towards=2)
    report([ids[0]], tag="v2.0.0", status="exited", health="none", at=T0 + seconds(25), towards=2)
    tick(T0 + seconds(30))  # retried at 30 s; it never polls again
    tick(T0 + seconds(150))
    row = RolloutDevice.objects.get(rollout=rollout, device_id=ids[0])
    assert (row.status, row.attempts) == ("deferred", 2)
