import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from devices.models import Device
from rollouts.models import Rollout

from .rollout_helpers import build_fleet, policy, push

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in() -> Client:
    User.objects.create_superuser("boss", "boss@example.com", "pw-unused-123")
    client = Client()
    client.login(username="boss", password="pw-unused-123")
    return client


@pytest.fixture
def rollout() -> Rollout:
    build_fleet(10)
    policy()
    return push(now=timezone.now())


@pytest.mark.parametrize(
    "url",
    [
        "/admin/devices/fleet/",
        "/admin/devices/device/",
        "/admin/devices/device/?online=yes",
        "/admin/rollouts/imagepolicy/",
        "/admin/rollouts/rollout/",
        "/admin/rollouts/rolloutdevice/?status__exact=scheduled",
        "/admin/rollouts/rolloutevent/",
    ],
)
def test_it_renders_the_admin_lists(admin_client_logged_in, rollout, url):
    assert admin_client_logged_in.get(url).status_code == 200


def test_it_shows_a_rollout_with_batch_progress_and_a_device_with_its_services(admin_client_logged_in, rollout):
    page = admin_client_logged_in.get(f"/admin/rollouts/rollout/{rollout.pk}/change/")
    assert page.status_code == 200
    assert b"Batch 1" in page.content
    events = admin_client_logged_in.get(f"/admin/rollouts/rolloutevent/?rollout__id__exact={rollout.pk}")
    assert b"image.rollout_created" in events.content
    device = Device.objects.first()
    page = admin_client_logged_in.get(f"/admin/devices/device/{device.pk}/change/")
    assert page.status_code == 200
    assert b"docker.io/iotistic/myapp" in page.content


def test_it_pauses_a_rollout_from_the_admin_action(admin_client_logged_in, rollout):
    response = admin_client_logged_in.post(
        "/admin/rollouts/rollout/", {"action": "pause", "_selected_action": [str(rollout.pk)]}
    )
    assert response.status_code == 302
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    assert rollout.events.filter(event_type="image.rollout_paused").exists()


def test_it_refuses_an_invalid_policy_in_the_admin_form(admin_client_logged_in):
    response = admin_client_logged_in.post(
        "/admin/rollouts/imagepolicy/add/",
        {
            "image_pattern": "iotistic/*",
            "update_strategy": "staged",
            "batch_percentages": "[50, 10]",
            "batch_delay_minutes": "30",
            "health_check_timeout_seconds": "300",
            "max_failure_rate": "0.2",
            "min_failure_samples": "5",
            "device_tags": "[]",
            "device_uuids": "[]",
            "maintenance_window": "null",
        },
    )
    assert response.status_code == 200
    assert b"strictly increasing" in response.content


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("device_uuids", '["not-a-uuid"]', b"valid UUID"),
        ("device_tags", '["has space"]', b"does not match"),
        ("device_tags", '"not-a-list"', b"list"),
    ],
)
def test_it_refuses_device_filters_the_api_would_refuse(admin_client_logged_in, field, value, message):
    from rollouts.models import ImagePolicy

    form = {
        "image_pattern": "iotistic/*",
        "update_strategy": "staged",
        "batch_percentages": "[10, 50, 100]",
        "batch_delay_minutes": "30",
        "health_check_timeout_seconds": "300",
        "max_failure_rate": "0.2",
        "min_failure_samples": "5",
        "device_tags": "[]",
        "device_uuids": "[]",
        "maintenance_window": "null",
        field: value,
    }
    response = admin_client_logged_in.post("/admin/rollouts/imagepolicy/add/", form)
    assert response.status_code == 200
    assert message in response.content
    assert not ImagePolicy.objects.exists()


def test_it_leaves_creating_fleets_to_the_api_which_hands_over_the_key(admin_client_logged_in):
    assert admin_client_logged_in.get("/admin/devices/fleet/add/").status_code == 403


def test_it_lists_no_device_for_a_tag_filter_that_cannot_be_a_tag(admin_client_logged_in, rollout):
    page = admin_client_logged_in.get("/admin/devices/device/?tag=a%00b")
    assert page.status_code == 200
    assert b"0 devices" in page.content
