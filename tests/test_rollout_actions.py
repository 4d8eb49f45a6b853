"""Operator actions (start, pause, resume, cancel, rollback-all) and superseding.

InvalidTransition is what the API answers with 409 `invalid_transition`.
"""

from collections import Counter

import pytest

from devices.models import Device, DeviceService
from devices.services import ServiceTarget, device_set_targets
from rollouts.models import Rollout, RolloutDevice
from rollouts.services import (
    InvalidTransition,
    rollout_cancel,
    rollout_pause,
    rollout_resume,
    rollout_rollback_all,
    rollout_start,
)

from .rollout_helpers import (
    IMAGE,
    T0,
    batch_device_ids,
    build_fleet,
    create_rollout,
    event_counts,
    minutes,
    policy,
    push,
    report,
    scheduled_device_ids,
    statuses,
    target_tags,
    target_versions,
    tick,
)

pytestmark = pytest.mark.django_db


def _rollout(count: int = 100, **policy_fields) -> Rollout:
    build_fleet(count)
    policy(**policy_fields)
    return push(now=T0)


def _finish_batch(rollout: Rollout, now, *, failures: int = 0) -> None:
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[:failures], tag="v2.0.0", health="unhealthy", at=now)
    report(ids[failures:], tag="v2.0.0", at=now)
    tick(now)
    rollout.refresh_from_db()


def _completed(count: int = 20) -> Rollout:
    rollout = _rollout(count, update_strategy="auto")
    _finish_batch(rollout, T0 + minutes(1))
    assert rollout.status == "completed"
    return rollout


# --- pause -------------------------------------------------------------------


def test_it_pauses_and_a_second_pause_is_harmless():
    rollout = _rollout()
    paused = rollout_pause(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(1))
    assert (paused.status, paused.status_reason) == ("paused", "Paused by alice.")
    again = rollout_pause(rollout_id=rollout.pk, actor="bob", now=T0 + minutes(2))
    assert (again.status, again.status_reason) == ("paused", "Paused by alice.")
    assert event_counts(rollout)["rollout_paused"] == 1


def test_it_neither_judges_nor_starts_batches_while_paused():
    rollout = _rollout()
    rollout_pause(rollout_id=rollout.pk, actor="alice", now=T0)
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=T0 + minutes(1))
    for later in (1, 31, 600):
        tick(T0 + minutes(later))
    rollout.refresh_from_db()
    assert (rollout.status, rollout.current_batch) == ("paused", 1)
    assert statuses(rollout) == Counter({("scheduled", ""): 10, ("pending", ""): 90})


@pytest.mark.parametrize("state", ["pending", "completed"])
def test_it_refuses_to_pause_a_rollout_that_is_not_running(state):
    rollout = _completed() if state == "completed" else _rollout(update_strategy="manual")
    with pytest.raises(InvalidTransition, match="Cannot pause a rollout that is"):
        rollout_pause(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(5))
    rollout.refresh_from_db()
    assert rollout.status in ("pending", "completed")
    assert event_counts(rollout)["rollout_paused"] == 0


# --- resume ------------------------------------------------------------------


def test_it_resumes_and_judges_the_threshold_from_the_resume_on():
    rollout = _rollout()
    _finish_batch(rollout, T0 + minutes(1), failures=10)  # all of batch 1
    assert rollout.status == "paused"
    resumed_at = T0 + minutes(10)
    rollout = rollout_resume(rollout_id=rollout.pk, actor="alice", now=resumed_at)
    assert (rollout.status, rollout.status_reason) == ("in_progress", "")
    # Batch 1 has all its verdicts: it counts as finished from the resume on.
    assert rollout.next_batch_at == resumed_at + minutes(30)
    tick(resumed_at + minutes(30))
    rollout.refresh_from_db()
    assert rollout.current_batch == 2
    # 3 of 40 since the resume; 13 of 50 overall would have breached 20%.
    _finish_batch(rollout, resumed_at + minutes(31), failures=3)
    assert rollout.status == "in_progress"
    tick(resumed_at + minutes(61))
    _finish_batch(rollout, resumed_at + minutes(62))
    assert rollout.status == "completed"
    assert statuses(rollout) == Counter(
        {("rolled_back", "unhealthy"): 10, ("failed", "unhealthy"): 3, ("healthy", ""): 87}
    )
    assert event_counts(rollout)["rollout_resumed"] == 1


def test_it_judges_reports_that_arrived_while_paused_on_resume():
    rollout = _rollout()
    rollout_pause(rollout_id=rollout.pk, actor="alice", now=T0)
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=T0 + minutes(1))
    rollout = rollout_resume(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(2))
    assert statuses(rollout, batch=1) == Counter({("healthy", ""): 10})
    assert rollout.batch_finished_at == T0 + minutes(2)


def test_it_treats_resuming_a_running_rollout_as_done():
    rollout = _rollout()
    resumed = rollout_resume(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(1))
    assert resumed.status == "in_progress"
    assert event_counts(rollout)["rollout_resumed"] == 0


def test_it_refuses_to_resume_a_completed_rollout():
    rollout = _completed()
    with pytest.raises(InvalidTransition, match="Cannot resume a rollout that is completed"):
        rollout_resume(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(5))


# --- cancel ------------------------------------------------------------------


def test_it_cancels_and_skips_the_devices_not_yet_reached():
    rollout = _rollout()
    _finish_batch(rollout, T0 + minutes(1))
    first = batch_device_ids(rollout, 1)
    rollout = rollout_cancel(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(5))
    assert (rollout.status, rollout.status_reason) == ("cancelled", "Cancelled by alice.")
    assert (rollout.finished_at, rollout.next_batch_at) == (T0 + minutes(5), None)
    tick(T0 + minutes(60))
    assert statuses(rollout) == Counter({("healthy", ""): 10, ("skipped", ""): 90})
    # Devices keep what they have: batch 1 stays on the new image.
    assert target_tags(first) == Counter({"v2.0.0": 10})
    assert target_versions() == Counter({2: 10, 1: 90})
    again = rollout_cancel(rollout_id=rollout.pk, actor="bob", now=T0 + minutes(6))
    assert again.status == "cancelled"
    assert event_counts(rollout)["rollout_cancelled"] == 1


def test_it_cancels_a_pending_rollout():
    rollout = _rollout(update_strategy="manual")
    rollout = rollout_cancel(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(1))
    assert rollout.status == "cancelled"
    assert statuses(rollout) == Counter({("skipped", ""): 100})
    with pytest.raises(InvalidTransition):
        rollout_start(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(2))


def test_it_refuses_to_cancel_a_completed_rollout():
    rollout = _completed()
    with pytest.raises(InvalidTransition, match="Cannot cancel a rollout that is completed"):
        rollout_cancel(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(5))
    rollout.refresh_from_db()
    assert rollout.status == "completed"


# --- rollback-all ------------------------------------------------------------


def test_it_rolls_back_every_moved_device_of_a_running_rollout():
    rollout = _rollout()
    _finish_batch(rollout, T0 + minutes(1))
    tick(T0 + minutes(31))  # batch 2 scheduled, no verdicts yet
    moved = batch_device_ids(rollout, 1) + batch_device_ids(rollout, 2)
    rollout = rollout_rollback_all(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(32))
    assert rollout.status == "rolled_back"
    assert rollout.finished_at == T0 + minutes(32)
    assert statuses(rollout) == Counter({("rolled_back", ""): 50, ("skipped", ""): 50})
    assert target_tags() == Counter({"v1.0.0": 100})
    assert target_versions(moved) == Counter({3: 50})
    assert target_versions() == Counter({3: 50, 1: 50})
    assert event_counts(rollout)["device_rolled_back"] == 50
    assert event_counts(rollout)["rollout_rolled_back"] == 1
    tick(T0 + minutes(120))
    assert target_versions() == Counter({3: 50, 1: 50})


def test_it_rolls_back_a_completed_rollout_once():
    rollout = _completed(20)
    rollout_rollback_all(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(10))
    again = rollout_rollback_all(rollout_id=rollout.pk, actor="bob", now=T0 + minutes(11))
    assert again.status == "rolled_back"
    assert statuses(rollout) == Counter({("rolled_back", ""): 20})
    assert target_tags() == Counter({"v1.0.0": 20})
    assert target_versions() == Counter({3: 20})
    assert event_counts(rollout)["device_rolled_back"] == 20


def test_it_leaves_devices_retargeted_since_alone_on_rollback():
    rollout = _completed(5)
    operator_moved = Device.objects.order_by("pk").first()
    device_set_targets(
        device_id=operator_moved.pk,
        targets={"web": ServiceTarget(image=IMAGE, tag="v9-hotfix")},
        now=T0 + minutes(5),
    )
    rollout_rollback_all(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(10))
    assert target_tags([operator_moved.pk]) == Counter({"v9-hotfix": 1})
    assert target_versions([operator_moved.pk]) == Counter({3: 1})
    assert statuses(rollout) == Counter({("rolled_back", ""): 4, ("healthy", ""): 1})


def test_it_refuses_to_roll_back_a_pending_rollout():
    rollout = _rollout(update_strategy="manual")
    with pytest.raises(InvalidTransition, match="Cannot roll back a rollout that is pending"):
        rollout_rollback_all(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(1))
    assert target_versions() == Counter({1: 100})


# --- start (manual policies) -------------------------------------------------


def test_it_waits_for_start_with_a_manual_policy():
    rollout = _rollout(update_strategy="manual")
    assert (rollout.status, rollout.total_devices, rollout.started_at) == ("pending", 100, None)
    assert rollout.fanned_out_at == T0
    for later in (1, 60, 24 * 60):
        tick(T0 + minutes(later))
    assert statuses(rollout) == Counter({("pending", ""): 100})
    assert target_versions() == Counter({1: 100})
    started_at = T0 + minutes(24 * 60 + 5)
    rollout = rollout_start(rollout_id=rollout.pk, actor="alice", now=started_at)
    assert (rollout.status, rollout.started_at) == ("in_progress", started_at)
    assert rollout.current_batch == 1
    assert statuses(rollout) == Counter({("scheduled", ""): 10, ("pending", ""): 90})
    first = RolloutDevice.objects.filter(rollout=rollout, batch=1)
    assert set(first.values_list("scheduled_at", flat=True)) == {started_at}
    again = rollout_start(rollout_id=rollout.pk, actor="bob", now=started_at + minutes(1))
    assert again.status == "in_progress"
    assert event_counts(rollout)["rollout_started"] == 1
    assert event_counts(rollout)["batch_started"] == 1
    assert rollout.events.get(event_type="image.rollout_started").data == {"actor": "alice"}


@pytest.mark.parametrize("end", ["completed", "cancelled"])
def test_it_refuses_to_start_a_finished_rollout(end):
    if end == "completed":
        rollout = _completed()
    else:
        rollout = _rollout(update_strategy="manual")
        rollout_cancel(rollout_id=rollout.pk, actor="alice", now=T0)
    with pytest.raises(InvalidTransition, match=f"Cannot start a rollout that is {end}"):
        rollout_start(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(5))


# --- superseding -------------------------------------------------------------


def test_it_supersedes_an_active_rollout_and_carries_its_devices_over():
    old = _rollout(20)  # batches of 2, 8 and 10 devices
    old_first = batch_device_ids(old, 1)
    assert target_tags(old_first) == Counter({"v2.0.0": 2})
    new = push(tag="v3.0.0", now=T0 + minutes(5))
    old.refresh_from_db()
    assert old.status == "superseded"
    assert old.superseded_by_id == new.pk
    assert old.finished_at == T0 + minutes(5)
    assert str(new.pk) in old.status_reason
    assert statuses(old) == Counter({("scheduled", ""): 2, ("skipped", ""): 18})
    superseded = old.events.get(event_type="image.rollout_superseded")
    assert superseded.data == {"superseded_by": str(new.pk)}
    assert new.total_devices == 20
    now = T0 + minutes(5)
    while new.status == "in_progress":
        now += minutes(1)
        report(scheduled_device_ids(new), tag="v3.0.0", at=now)
        tick(now)
        now += minutes(30)
        tick(now)
        new.refresh_from_db()
    assert new.status == "completed"
    old_tags = dict(RolloutDevice.objects.filter(rollout=new).values_list("device_id", "old_tag"))
    assert {device: tag for device, tag in old_tags.items() if device in old_first} == {
        device: "v2.0.0" for device in old_first
    }
    assert Counter(old_tags.values()) == Counter({"v1.0.0": 18, "v2.0.0": 2})
    assert target_tags() == Counter({"v3.0.0": 20})
    assert target_versions(old_first) == Counter({3: 2})
    assert target_versions() == Counter({3: 2, 2: 18})
    old.refresh_from_db()
    assert old.status == "superseded"


def test_it_records_the_tag_a_device_runs_when_it_is_scheduled_not_at_fan_out():
    _rollout(20)
    new = push(tag="v3.0.0", now=T0 + minutes(5))
    # Carried-over devices were on v2.0.0 at fan-out already; a device moved
    # by an operator between fan-out and its batch is rolled back to the tag
    # it was moved to.
    later = RolloutDevice.objects.filter(rollout=new, batch=3).order_by("device_id").first()
    device_set_targets(
        device_id=later.device_id,
        targets={"web": ServiceTarget(image=IMAGE, tag="v1.5.0")},
        now=T0 + minutes(6),
    )
    assert later.old_tag in ("v1.0.0", "v2.0.0")
    now = T0 + minutes(5)
    while new.status == "in_progress":
        now += minutes(1)
        report(scheduled_device_ids(new), tag="v3.0.0", at=now)
        tick(now)
        now += minutes(30)
        tick(now)
        new.refresh_from_db()
    later.refresh_from_db()
    assert (later.status, later.old_tag) == ("healthy", "v1.5.0")


@pytest.mark.parametrize("state", ["pending", "paused"])
def test_it_supersedes_pending_and_paused_rollouts(state):
    if state == "pending":
        old = _rollout(20, update_strategy="manual")
    else:
        old = _rollout(20)
        _finish_batch(old, T0 + minutes(1))  # batch 2 due at T0 + 31 minutes
        rollout_pause(rollout_id=old.pk, actor="alice", now=T0 + minutes(2))
    new = push(tag="v3.0.0", now=T0 + minutes(5))
    old.refresh_from_db()
    assert (old.status, old.superseded_by_id, old.next_batch_at) == ("superseded", new.pk, None)
    assert not RolloutDevice.objects.filter(rollout=old, status="pending").exists()
    assert event_counts(old)["rollout_superseded"] == 1


def test_it_leaves_finished_rollouts_of_the_image_alone_on_a_new_push():
    old = _completed(10)
    push(tag="v3.0.0", now=T0 + minutes(5))
    old.refresh_from_db()
    assert (old.status, old.superseded_by_id) == ("completed", None)
    assert DeviceService.objects.filter(target_tag="v3.0.0").count() == 10


def test_it_starts_a_manual_rollout_before_its_fan_out_and_schedules_after_it():
    build_fleet(100)
    policy(update_strategy="manual")
    rollout = create_rollout(now=T0)
    rollout = rollout_start(rollout_id=rollout.pk, actor="alice", now=T0 + minutes(1))
    assert (rollout.status, rollout.current_batch) == ("in_progress", 0)
    assert target_versions() == Counter({1: 100})
    # The tick does the fan-out the lost task did not, then the first batch.
    tick(T0 + minutes(2))
    rollout.refresh_from_db()
    assert (rollout.total_devices, rollout.current_batch) == (100, 1)
    assert statuses(rollout) == Counter({("scheduled", ""): 10, ("pending", ""): 90})
    assert event_counts(rollout)["rollout_started"] == 1
