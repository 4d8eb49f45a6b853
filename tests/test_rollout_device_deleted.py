"""Deleting a device that takes part in an active rollout keeps the rollout's
numbers true."""

import pytest

from devices.models import Device

from .rollout_helpers import T0, build_fleet, minutes, policy, push, report, tick

pytestmark = pytest.mark.django_db


def _rollout_body(api, rollout):
    response = api.get(f"/api/v1/rollouts/{rollout.pk}/")
    assert response.status_code == 200
    return response.json()


def test_it_counts_only_the_devices_left_after_one_is_deleted(admin_api):
    build_fleet(3)
    policy(batch_percentages=[100])
    rollout = push(now=T0)
    gone, *kept = Device.objects.order_by("pk")
    assert admin_api.delete(f"/api/v1/devices/{gone.uuid}/").status_code == 204
    body = _rollout_body(admin_api, rollout)
    assert body["total_devices"] == 2
    assert sum(body["counts"].values()) == 2
    assert body["counts"]["scheduled"] == 2


def test_it_completes_with_true_numbers_when_a_scheduled_device_is_deleted(admin_api):
    build_fleet(3)
    policy(batch_percentages=[100])
    rollout = push(now=T0)
    gone, *kept = Device.objects.order_by("pk")
    gone.delete()
    report([device.pk for device in kept], tag="v2.0.0", at=T0 + minutes(1))
    for later in (1, 2):
        tick(T0 + minutes(later))
    body = _rollout_body(admin_api, rollout)
    assert body["status"] == "completed"
    assert body["total_devices"] == 2
    assert body["counts"]["healthy"] == 2
    assert body["failure_rate"] == 0.0
