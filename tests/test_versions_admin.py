"""The admin's version pieces: history, pins and rollback on the device page,
the version distribution bar on the fleet page."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from devices.models import DeviceService, ServiceHistory
from devices.services import ServiceTarget, device_change_services, device_create, ServiceChange

from .factories import FleetFactory

pytestmark = pytest.mark.django_db

IMAGE = "docker.io/iotistic/myapp"


@pytest.fixture
def browser() -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def device():
    made, _ = device_create(fleet=FleetFactory(), name="edge-1", targets={"web": ServiceTarget(IMAGE, "1.0")})
    device_change_services(device_id=made.pk, changes={"web": ServiceChange(tag="1.1")})
    device_change_services(device_id=made.pk, changes={"web": ServiceChange(tag="1.1-hotfix", pinned=True)})
    return made


def test_the_device_page_shows_history_pins_and_the_rollback_button(browser, device):
    page = browser.get(f"/admin/devices/device/{device.pk}/change/").content.decode()
    assert f"{IMAGE}:1.1-hotfix" in page and f"{IMAGE}:1.0" in page
    assert "Registration" in page and "Manual" in page and ">Pin<" in page
    assert 'data-device-action="rollback"' in page
    assert 'data-pinned="true"' in page  # the pinned service (the console's services table)


def test_the_rollback_action_sends_every_service_back(browser, device):
    response = browser.post(
        "/admin/devices/device/", {"action": "roll_back", "_selected_action": [str(device.pk)]}
    )
    assert response.status_code == 302
    assert DeviceService.objects.get(device=device).target_tag == "1.1"
    assert ServiceHistory.objects.filter(device=device).order_by("-id").first().source == "rollback"


def test_the_rollback_action_says_when_nothing_changes(browser):
    made, _ = device_create(fleet=FleetFactory(), targets={"web": ServiceTarget(IMAGE, "1.0")})
    response = browser.post(
        "/admin/devices/device/", {"action": "roll_back", "_selected_action": [str(made.pk)]}, follow=True
    )
    assert "No service has a previous version" in response.content.decode()


def test_the_fleet_page_shows_the_version_distribution_as_a_bar(browser):
    fleet = FleetFactory()
    for tag in ("2.0", "2.0", "2.0", "1.9"):
        made, _ = device_create(fleet=fleet, targets={"web": ServiceTarget(IMAGE, tag)})
        DeviceService.objects.filter(device=made).update(reported_image=IMAGE, reported_tag=tag)
    page = browser.get(f"/admin/devices/fleet/{fleet.pk}/change/").content.decode()
    # The console's fleet page draws it (console/templates/console/_image_inventory.html).
    assert 'class="c-versions"' in page
    assert "width: 75.00%" in page and "width: 25.00%" in page
    assert 'title="2.0: 3 targeted, 3 running"' in page and 'title="1.9: 1 targeted, 1 running"' in page
