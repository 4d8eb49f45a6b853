import pytest
from django.db.models import Count

from devices.models import Device, DeviceService
from rollouts.models import RolloutDevice

from .rollout_helpers import (
    T0, build_fleet, minutes, policy, push, report, scheduled_device_ids, tick,
)

pytestmark = pytest.mark.django_db


def test_it_rolls_1000_devices_through_three_batches_to_completion():
    build_fleet(1000)
    policy(batch_delay_minutes=30)
    rollout = push(now=T0)
    assert rollout.status == "in_progress"
    sizes = dict(RolloutDevice.objects.filter(rollout=rollout).values_list("batch").annotate(n=Count("id")))
    assert sizes == {1: 100, 2: 400, 3: 500}
    now = T0
    for batch, size in [(1, 100), (2, 400), (3, 500)]:
        rollout.refresh_from_db()
        assert rollout.current_batch == batch
        ids = scheduled_device_ids(rollout)
        assert len(ids) == size
        now += minutes(1)
        report(ids, tag="v2.0.0", at=now)
        tick(now)  # verdicts: batch finished, delay starts
        tick(now + minutes(29))  # still inside the delay: nothing new
        assert rollout.devices.filter(status="scheduled").count() == 0
        now += minutes(30)
        tick(now)
    rollout.refresh_from_db()
    assert rollout.status == "completed"
    assert set(Device.objects.values_list("target_version", flat=True)) == {2}
    assert set(DeviceService.objects.values_list("target_tag", "previous_tag").distinct()) == {("v2.0.0", "v1.0.0")}
