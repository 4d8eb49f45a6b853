"""The engine tick: batches, verdicts, the failure threshold, auto-rollback.

Time is virtual: every step passes `now`, nothing sleeps.
"""

from collections import Counter

import pytest
from django.core.management import call_command
from django.db.models import Count, Max, Min
from django.utils import timezone

from devices.models import Device, DeviceService
from devices.services import ServiceTarget, device_set_targets
from rollouts.models import RolloutDevice, RolloutEvent
from rollouts.services import batch_boundaries

from .rollout_helpers import (
    IMAGE,
    T0,
    batch_device_ids,
    build_fleet,
    event_counts,
    minutes,
    policy,
    push,
    report,
    scheduled_device_ids,
    seconds,
    statuses,
    target_tags,
    target_versions,
    tick,
)

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def _finish_batch(rollout, now, *, failures: int = 0) -> None:
    """The scheduled devices report the new image: the first `failures`
    unhealthy, the rest healthy; then one tick judges them."""
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[:failures], tag="v2.0.0", health="unhealthy", at=now)
    report(ids[failures:], tag="v2.0.0", at=now)
    tick(now)
    rollout.refresh_from_db()


def test_it_rolls_1000_devices_through_three_batches_to_completion():
    build_fleet(1000)
    policy(batch_delay_minutes=30)
    rollout = push(now=T0)
    assert rollout.status == "in_progress"
    rows = RolloutDevice.objects.filter(rollout=rollout)
    sizes = dict(rows.values_list("batch").annotate(n=Count("id")))
    assert sizes == {1: 100, 2: 400, 3: 500}
    now, reached = T0, 0
    for batch, size in [(1, 100), (2, 400), (3, 500)]:
        rollout.refresh_from_db()
        assert rollout.current_batch == batch
        ids = scheduled_device_ids(rollout)
        assert sorted(ids) == batch_device_ids(rollout, batch)
        assert len(ids) == size
        # Only this batch and the ones before it were ever touched.
        reached += size
        assert target_versions() == Counter({2: reached, 1: 1000 - reached})
        assert target_tags() == Counter({"v2.0.0": reached, "v1.0.0": 1000 - reached})
        now += minutes(1)
        _finish_batch(rollout, now)
        if batch == 3:
            break
        assert rollout.batch_finished_at == now
        assert rollout.next_batch_at == now + minutes(30)
        tick(now + minutes(30) - seconds(1))  # the delay has not passed yet
        rollout.refresh_from_db()
        assert rollout.current_batch == batch
        assert rollout.devices.filter(status="scheduled").count() == 0
        now += minutes(30)
        tick(now)
        started = rows.filter(batch=batch + 1).aggregate(Min("scheduled_at"), Max("scheduled_at"))
        assert started == {"scheduled_at__min": now, "scheduled_at__max": now}
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    # Complete as soon as the last batch is judged: no delay follows it.
    assert rollout.finished_at == now
    assert rollout.next_batch_at is None
    assert statuses(rollout) == Counter({("healthy", ""): 1000})
    assert target_versions() == Counter({2: 1000})
    targets = DeviceService.objects.values_list("target_tag", "previous_tag", "target_rollout_id")
    assert set(targets) == {("v2.0.0", "v1.0.0", rollout.pk)}
    assert event_counts(rollout) == Counter(
        {
            "webhook_received": 1,
            "rollout_created": 1,
            "rollout_started": 1,
            "batch_started": 3,
            "device_scheduled": 1000,
            "device_updated": 1000,
            "health_check_passed": 1000,
            "batch_completed": 3,
            "rollout_completed": 1,
        }
    )
    scheduled = rollout.events.filter(event_type="image.device_scheduled")
    assert scheduled.values("device_uuid").distinct().count() == 1000


def test_it_pauses_after_an_unhealthy_first_batch_and_rolls_it_back():
    build_fleet(1000)
    policy(batch_delay_minutes=30)
    rollout = push(now=T0)
    first = batch_device_ids(rollout, 1)
    others = list(Device.objects.exclude(pk__in=first).values_list("pk", flat=True))
    report(first, tag="v2.0.0", health="unhealthy", at=T0 + minutes(1))
    for later in (1, 31, 120, 24 * 60):
        tick(T0 + minutes(later))
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    assert rollout.current_batch == 1
    assert rollout.status_reason.startswith("Failure rate 1.00 exceeded 0.20")
    assert statuses(rollout) == Counter({("rolled_back", "unhealthy"): 100, ("pending", ""): 900})
    # Back on the previous image, with a new target_version: created 1,
    # scheduled 2, rolled back 3.
    assert target_tags(first) == Counter({"v1.0.0": 100})
    assert target_versions(first) == Counter({3: 100})
    services = DeviceService.objects.filter(device_id__in=first)
    assert set(services.values_list("previous_tag", "target_rollout_id")) == {("v2.0.0", None)}
    # No device outside batch 1 was ever scheduled.
    assert target_tags(others) == Counter({"v1.0.0": 900})
    assert target_versions(others) == Counter({1: 900})
    later_batches = RolloutDevice.objects.filter(rollout=rollout, batch__gt=1)
    assert not later_batches.exclude(status="pending").exists()
    assert not later_batches.filter(scheduled_at__isnull=False).exists()
    assert event_counts(rollout) == Counter(
        {
            "webhook_received": 1,
            "rollout_created": 1,
            "rollout_started": 1,
            "batch_started": 1,
            "device_scheduled": 100,
            "device_updated": 100,
            "health_check_failed": 100,
            "rollout_failed": 1,
            "rollout_paused": 1,
            "device_rolled_back": 100,
        }
    )
    first_uuids = set(Device.objects.filter(pk__in=first).values_list("uuid", flat=True))
    for event_type in ("image.health_check_failed", "image.device_rolled_back"):
        events = rollout.events.filter(event_type=event_type)
        assert set(events.values_list("device_uuid", flat=True)) == first_uuids
    failed = rollout.events.get(event_type="image.rollout_failed")
    assert failed.data == {"failure_rate": 1.0, "failed": 100, "healthy": 0}


def test_it_fails_a_silent_device_as_timeout_only_after_the_timeout():
    build_fleet(20)
    policy(update_strategy="auto", health_check_timeout_seconds=120)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    silent, downloading, starting, healthy = ids[0], ids[1], ids[2], ids[3:]
    # It polled its new target, so it is not offline (that would defer it).
    Device.objects.filter(pk=silent).update(last_seen_at=T0 + seconds(10))
    report(healthy, tag="v2.0.0", at=T0 + seconds(30))
    report([downloading], tag="v2.0.0", status="downloading", health="none", at=T0 + seconds(30))
    report([starting], tag="v2.0.0", health="starting", at=T0 + seconds(30))
    tick(T0 + seconds(30))
    tick(T0 + seconds(119))
    assert statuses(rollout) == Counter(
        {("healthy", ""): 17, ("scheduled", ""): 2, ("updated", ""): 1}
    )
    assert RolloutDevice.objects.get(rollout=rollout, device_id=starting).status == "updated"
    tick(T0 + seconds(120))
    assert statuses(rollout) == Counter({("healthy", ""): 17, ("failed", "timeout"): 3})
    failed = RolloutDevice.objects.filter(rollout=rollout, status="failed")
    assert set(failed.values_list("device_id", flat=True)) == {silent, downloading, starting}
    rollout.refresh_from_db()
    assert rollout.status == "completed"  # 3 of 20 is under the 20% threshold
    events = rollout.events.filter(event_type="image.device_failed")
    assert [event.data["failure_reason"] for event in events] == ["timeout"] * 3
    assert set(events.values_list("device_uuid", flat=True)) == set(
        Device.objects.filter(pk__in=[silent, downloading, starting]).values_list("uuid", flat=True)
    )


def _run_to_the_end(rollout, failures_per_batch: list[int]) -> None:
    now = T0
    for failures in failures_per_batch:
        rollout.refresh_from_db()
        if rollout.status != "in_progress":
            return
        now += minutes(1)
        _finish_batch(rollout, now, failures=failures)
        now += minutes(30)
        tick(now)


def test_it_completes_with_15_percent_failures_under_a_20_percent_threshold():
    build_fleet(100)
    policy()
    rollout = push(now=T0)
    _run_to_the_end(rollout, [1, 6, 8])  # of 10, 40 and 50 devices
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert statuses(rollout) == Counter({("healthy", ""): 85, ("failed", "unhealthy"): 15})
    # Failed devices stay on the new image: no rollback without a breach.
    assert target_tags() == Counter({"v2.0.0": 100})


def test_it_pauses_with_25_percent_failures():
    build_fleet(100)
    policy()
    rollout = push(now=T0)
    _run_to_the_end(rollout, [2, 10, 13])  # batch 1 alone is 20%: not over it
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    assert rollout.current_batch == 2
    assert "0.24 exceeded 0.20" in rollout.status_reason
    assert statuses(rollout) == Counter(
        {("healthy", ""): 38, ("rolled_back", "unhealthy"): 12, ("pending", ""): 50}
    )
    assert target_tags(batch_device_ids(rollout, 3)) == Counter({"v1.0.0": 50})


def test_it_judges_mid_batch_once_min_failure_samples_verdicts_exist():
    build_fleet(100)
    policy(min_failure_samples=5)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))  # batch 1: 10 devices
    report(ids[:4], tag="v2.0.0", health="unhealthy", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    rollout.refresh_from_db()
    assert rollout.status == "in_progress"  # 4 verdicts are not enough to judge
    report(ids[4:5], tag="v2.0.0", health="unhealthy", at=T0 + minutes(2))
    tick(T0 + minutes(2))
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    # Failed and in-flight devices of the rollout both go back.
    assert statuses(rollout) == Counter(
        {("rolled_back", "unhealthy"): 5, ("rolled_back", ""): 5, ("pending", ""): 90}
    )
    assert target_tags(ids) == Counter({"v1.0.0": 10})
    assert target_versions(ids) == Counter({3: 10})


def test_it_leaves_failed_devices_alone_when_auto_rollback_is_off():
    build_fleet(100)
    policy(auto_rollback_enabled=False)
    rollout = push(now=T0)
    _finish_batch(rollout, T0 + minutes(1), failures=10)
    assert rollout.status == "paused"
    assert statuses(rollout, batch=1) == Counter({("failed", "unhealthy"): 10})
    assert target_tags(batch_device_ids(rollout, 1)) == Counter({"v2.0.0": 10})
    assert event_counts(rollout)["device_rolled_back"] == 0


def test_it_fails_a_device_that_crashes_on_the_new_image_as_crashed():
    build_fleet(10)
    policy(update_strategy="auto")
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[:1], tag="v2.0.0", status="exited", health="none", at=T0 + minutes(1))
    report(ids[1:], tag="v2.0.0", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    assert RolloutDevice.objects.get(rollout=rollout, device_id=ids[0]).failure_reason == "crashed"
    assert statuses(rollout) == Counter({("healthy", ""): 9, ("failed", "crashed"): 1})
    event = rollout.events.get(event_type="image.device_failed")
    assert event.data == {"service": "web", "batch": 1, "failure_reason": "crashed"}


def test_it_counts_running_as_success_when_health_checks_are_disabled():
    build_fleet(10)
    policy(update_strategy="auto", health_check_enabled=False)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[:5], tag="v2.0.0", health="starting", at=T0 + minutes(1))
    report(ids[5:], tag="v2.0.0", health="unhealthy", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    rollout.refresh_from_db()
    assert statuses(rollout) == Counter({("healthy", ""): 10})
    assert rollout.status == "completed"


def test_it_ignores_reports_made_before_the_device_was_scheduled():
    build_fleet(10)
    policy(update_strategy="auto")
    rollout = push(now=T0)
    # A stale report of the new tag (e.g. clock skew or an old run) is no verdict.
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=T0 - minutes(5))
    tick(T0 + minutes(1))
    assert statuses(rollout) == Counter({("scheduled", ""): 10})


def test_it_forgives_a_few_seconds_of_clock_skew_between_web_and_worker():
    build_fleet(10)
    policy(update_strategy="auto")
    rollout = push(now=T0)
    # The web process's clock is 2 s behind the worker's that scheduled it.
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=T0 - seconds(2))
    tick(T0 + minutes(1))
    assert statuses(rollout) == Counter({("healthy", ""): 10})


def test_it_schedules_every_device_at_once_for_an_auto_policy():
    build_fleet(30)
    policy(update_strategy="auto", batch_percentages=[10, 50, 100])
    rollout = push(now=T0)
    assert (rollout.total_batches, rollout.batch_percentages) == (1, [100])
    assert statuses(rollout) == Counter({("scheduled", ""): 30})
    assert target_versions() == Counter({2: 30})


def test_it_completes_a_one_device_rollout_after_its_only_batch():
    build_fleet(1)
    policy()
    rollout = push(now=T0)
    assert batch_boundaries(1, rollout.batch_percentages) == [1, 1, 1]
    _finish_batch(rollout, T0 + minutes(1))
    assert rollout.status == "completed"
    assert rollout.finished_at == T0 + minutes(1)


def test_it_splits_batches_cumulatively_rounding_up():
    assert batch_boundaries(1000, [10, 50, 100]) == [100, 500, 1000]
    assert batch_boundaries(15, [10, 50, 100]) == [2, 8, 15]
    assert batch_boundaries(3, [10, 50, 100]) == [1, 2, 3]
    assert batch_boundaries(2, [10, 50, 100]) == [1, 2, 2]
    assert batch_boundaries(0, [10, 50, 100]) == [0, 0, 0]


def test_it_skips_devices_already_on_the_new_digest():
    build_fleet(10)
    policy(update_strategy="auto")
    on_digest = list(Device.objects.order_by("pk").values_list("pk", flat=True)[:2])
    DeviceService.objects.filter(device_id__in=on_digest).update(
        target_tag="latest", target_digest=DIGEST
    )
    rollout = push(digest=DIGEST, now=T0)
    assert statuses(rollout) == Counter({("scheduled", ""): 8, ("skipped", ""): 2})
    skipped = RolloutDevice.objects.filter(rollout=rollout, status="skipped")
    assert list(skipped.values_list("batch", flat=True)) == [None, None]
    assert set(skipped.values_list("skip_reason", flat=True)) == {"already_current"}
    assert target_versions(on_digest) == Counter({1: 2})
    assert rollout.total_devices == 10
    assert rollout.digest_source == "push"
    pending = RolloutDevice.objects.filter(rollout=rollout).exclude(status="skipped")
    assert set(pending.values_list("skip_reason", flat=True)) == {None}


def test_it_judges_by_digest_when_the_push_has_one():
    build_fleet(10)
    policy(update_strategy="auto")
    rollout = push(digest=DIGEST, now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[:8], tag="v2.0.0", digest=DIGEST, at=T0 + minutes(1))
    # Same tag, other digest: the tag was moved, the device runs something else.
    report(ids[8:], tag="v2.0.0", digest=OTHER_DIGEST, at=T0 + minutes(1))
    tick(T0 + minutes(1))
    assert statuses(rollout) == Counter({("healthy", ""): 8, ("scheduled", ""): 2})
    services = DeviceService.objects.filter(device_id__in=ids)
    assert set(services.values_list("target_digest", flat=True)) == {DIGEST}


def test_it_advances_rollouts_from_the_management_command(capsys):
    build_fleet(5)
    policy(update_strategy="auto")
    now = timezone.now()
    rollout = push(now=now)
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=timezone.now())
    call_command("advance_rollouts")
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert "Advanced 1 rollout(s)." in capsys.readouterr().out
    assert RolloutEvent.objects.filter(event_type="image.rollout_completed").count() == 1


def _deploy(device_id: int, image: str, tag: str, now) -> None:
    target = ServiceTarget(image=image, tag=tag)
    device_set_targets(device_id=device_id, targets={"web": target}, now=now)


def test_it_skips_devices_an_operator_moved_before_their_batch():
    build_fleet(20)
    policy(batch_percentages=[50, 100])
    rollout = push(now=T0)
    moved_away, moved_ahead, moved_sideways = batch_device_ids(rollout, 2)[:3]
    _deploy(moved_away, "docker.io/iotistic/otherapp", "v1.0.0", T0 + minutes(1))
    _deploy(moved_ahead, IMAGE, "v2.0.0", T0 + minutes(1))
    _deploy(moved_sideways, IMAGE, "v1.5.0", T0 + minutes(1))
    _finish_batch(rollout, T0 + minutes(2))
    tick(T0 + minutes(32))
    rows = {row.device_id: row for row in RolloutDevice.objects.filter(rollout=rollout, batch=2)}
    assert (rows[moved_away].status, rows[moved_ahead].status) == ("skipped", "skipped")
    # Only the one moved onto the new version is current; the other left the image.
    assert (rows[moved_away].skip_reason, rows[moved_ahead].skip_reason) == (None, "already_current")
    assert (rows[moved_sideways].status, rows[moved_sideways].old_tag) == ("scheduled", "v1.5.0")
    # The skipped ones were not touched again: one bump, the operator's.
    assert target_versions([moved_away, moved_ahead]) == Counter({2: 2})
    assert target_versions([moved_sideways]) == Counter({3: 1})
    assert target_tags([moved_ahead, moved_sideways]) == Counter({"v2.0.0": 2})
    away = DeviceService.objects.get(device_id=moved_away)
    assert away.target_image == "docker.io/iotistic/otherapp"
    assert statuses(rollout, batch=2) == Counter({("scheduled", ""): 8, ("skipped", ""): 2})


def test_it_does_not_count_a_failing_old_container_against_the_new_release():
    build_fleet(10)
    policy(update_strategy="auto")
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    # Still reporting the old release, which has crashed: not a verdict on v2.
    report(ids[:1], tag="v1.0.0", status="failed", health="none", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    assert RolloutDevice.objects.get(rollout=rollout, device_id=ids[0]).status == "scheduled"


def test_it_keeps_advancing_other_rollouts_when_one_of_them_fails(caplog):
    from rollouts.models import Rollout

    build_fleet(10)
    policy(batch_delay_minutes=0)
    broken = push(now=T0)
    # A window whose zone cannot be loaded: starting its next batch raises.
    Rollout.objects.filter(pk=broken.pk).update(
        maintenance_window={"days": ["mon"], "start": "01:00", "end": "02:00", "timezone": "No/Such_Zone"}
    )
    other_fleet = build_fleet(10, tag="v1.0.0")
    other_image = "docker.io/other/app"
    DeviceService.objects.filter(device__fleet=other_fleet).update(target_image=other_image)
    policy(pattern="docker.io/other/*:*")
    from rollouts.services import rollout_create_for_push, rollout_fan_out

    healthy = rollout_create_for_push(image=other_image, tag="v2", digest=None, now=T0).rollout
    rollout_fan_out(rollout_id=healthy.pk, now=T0)
    ids = scheduled_device_ids(healthy)
    DeviceService.objects.filter(device_id__in=ids).update(
        reported_image=other_image, reported_tag="v2", reported_status="running",
        reported_health="healthy", reported_at=T0 + minutes(1),
    )
    broken_ids = scheduled_device_ids(broken)
    report(broken_ids, tag="v2.0.0", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    assert healthy.devices.filter(status="healthy").count() == len(ids)
    assert f"advancing rollout {broken.pk} failed" in caplog.text
    # The broken rollout's transaction was rolled back as a whole.
    assert broken.devices.filter(status="healthy").count() == 0


def test_it_stamps_the_rollout_with_the_engine_clock():
    build_fleet(3)
    policy()
    rollout = push(now=T0)
    assert rollout.created_at == T0
