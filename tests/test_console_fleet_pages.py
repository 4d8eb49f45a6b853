"""The console's fleet, image and device pages."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from devices.models import Device, DeviceService, Fleet

from .console_data import PASSWORD, VIEWER_PERMISSIONS, rollout_in_progress, user_with
from .rollout_helpers import IMAGE

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer():
    client = Client()
    assert client.login(username=user_with("viewer", *VIEWER_PERMISSIONS).username, password=PASSWORD)
    return client


def versions_of(html: str, image: str) -> dict[str, int]:
    block = html.split(f'data-image="{image}"', 1)[1].split('class="c-legend"', 1)[0]
    return {tag: int(count) for tag, count in re.findall(r'title="([^":]+): (\d+) targeted', block)}


def test_it_shows_the_version_distribution_of_a_fleet(viewer):
    rollout = rollout_in_progress(20, timezone.now())
    fleet = Fleet.objects.get()
    html = viewer.get(f"/admin/devices/fleet/{fleet.pk}/change/").content.decode()
    # Batches 1 and 2 (2 + 8 devices) target the new tag, batch 3 the old one.
    assert versions_of(html, IMAGE) == {"v2.0.0": 10, "v1.0.0": 10}
    assert "active rollout" in html and rollout.new_tag in html


def test_it_counts_devices_behind_and_drifting(viewer):
    rollout_in_progress(10, timezone.now())
    long_ago = timezone.now() - timedelta(hours=1)
    DeviceService.objects.update(target_changed_at=long_ago)
    html = viewer.get("/admin/images/").content.decode()
    # No completed rollout: nobody is behind; the devices that never reported
    # their target, set an hour ago, drift.
    reported = DeviceService.objects.filter(reported_tag="v2.0.0").count()
    assert f"{10 - reported} drifting" in html
    assert "0 behind" in html


def test_it_shows_an_image_with_its_rollouts(viewer):
    rollout = rollout_in_progress(10, timezone.now())
    html = viewer.get(f"/admin/images/{IMAGE}/").content.decode()
    assert IMAGE in html
    assert f"/admin/rollouts/rollout/{rollout.pk}/change/" in html
    assert viewer.get("/admin/images/docker.io/nobody/nothing/").status_code == 404


def test_it_shows_a_device_with_its_services_and_rollouts(viewer):
    rollout = rollout_in_progress(10, timezone.now())
    device = Device.objects.get(pk=rollout.devices.filter(batch=1).first().device_id)
    html = viewer.get(f"/admin/devices/device/{device.pk}/change/").content.decode()
    assert 'data-service="web"' in html
    assert "v1.0.0 &rarr; v2.0.0" in html
    assert "healthy" in html


def test_it_refuses_the_image_pages_without_device_permissions():
    user_with("policy-only", "rollouts.view_imagepolicy")
    client = Client()
    client.login(username="policy-only", password=PASSWORD)
    assert client.get("/admin/images/").status_code == 403


def test_it_leads_the_index_with_the_active_rollouts(viewer):
    rollout = rollout_in_progress(10, timezone.now())
    html = viewer.get("/admin/").content.decode()
    assert "Active rollouts" in html
    assert f"/admin/rollouts/rollout/{rollout.pk}/change/" in html
