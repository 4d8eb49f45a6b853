"""What the agent endpoints accept (issue 15): strict JSON types (point 8) and
the caps on services per device and on string lengths (point 4)."""

import json
import uuid as uuid_lib

import pytest

from devices.models import Device, DeviceService
from tests.factories import DeviceFactory, DeviceServiceFactory, FleetFactory

pytestmark = pytest.mark.django_db

STATE = "/api/v1/device/{uuid}/state"


def report(client, device, body):
    return client.patch(
        STATE.format(uuid=device.uuid),
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {device.api_key}",
    )


def register(client, body):
    from devices.services import fleet_create

    fleet, key = fleet_create(slug=f"strict-{uuid_lib.uuid4().hex[:8]}", name="Strict")
    return client.post(
        "/api/v1/device/register",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def stored():
    return (
        list(Device.objects.order_by("id").values()),
        list(DeviceService.objects.order_by("id").values()),
    )


@pytest.mark.parametrize(
    "body",
    [
        {"target_version": "7"},
        {"target_version": 7.0},
        {"target_version": True},
        {"services": {"web": {"image": 5}}},
        {"services": {"web": {"image": "nginx", "tag": 7}}},
        {"services": {"web": {"digest": ["sha256:x"]}}},
        {"services": {"web": {"status": 1}}},
        {"services": {"web": {"health": True}}},
        {"target_version": "7", "services": {"web": {"image": 5, "tag": 7}}},
    ],
)
def test_a_report_of_the_wrong_types_is_a_400_and_stores_nothing(api_client, body):
    device = DeviceServiceFactory().device
    before = stored()
    response = report(api_client, device, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert stored() == before


@pytest.mark.parametrize(
    "body",
    [{"name": 12}, {"name": None}, {"tags": [1]}, {"tags": ["ok", False]}, {"uuid": 5}],
)
def test_a_registration_of_the_wrong_types_is_a_400_and_creates_nothing(api_client, body):
    response = register(api_client, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert not Device.objects.exists()


def test_the_strict_types_still_accept_the_right_ones(api_client):
    device = DeviceFactory()
    body = {
        "target_version": 0,
        "services": {"web": {"image": "nginx", "tag": "1.27", "status": "running", "health": None}},
    }
    assert report(api_client, device, body).status_code == 200
    assert register(api_client, {"name": "pi", "tags": ["edge"]}).status_code == 201


def services(count, start=0):
    return {f"svc-{n}": {"status": "running"} for n in range(start, start + count)}


def test_a_report_of_more_services_than_the_cap_is_a_400(api_client, settings):
    settings.DEVICE_MAX_SERVICES = 5
    device = DeviceFactory()
    response = report(api_client, device, {"services": services(6)})
    assert response.status_code == 400
    assert not DeviceService.objects.exists()


def test_a_report_that_would_take_a_device_past_the_cap_is_a_400(api_client, settings):
    settings.DEVICE_MAX_SERVICES = 5
    device = DeviceFactory()
    assert report(api_client, device, {"services": services(4)}).status_code == 200
    response = report(api_client, device, {"services": services(2, start=4)})
    assert response.status_code == 400
    assert response.json()["error"] == "too_many_services"
    assert DeviceService.objects.filter(device=device).count() == 4
    # The services it has, plus one: exactly the cap.
    assert report(api_client, device, {"services": services(5)}).status_code == 200
    assert DeviceService.objects.filter(device=device).count() == 5


def test_the_cap_defaults_to_64(api_client):
    device = DeviceFactory()
    assert report(api_client, device, {"services": services(64)}).status_code == 200
    assert report(api_client, device, {"services": services(1, start=64)}).status_code == 400


def test_an_operator_cannot_take_a_device_past_the_cap(admin_api, settings):
    settings.DEVICE_MAX_SERVICES = 2
    device = DeviceServiceFactory(name="web").device
    DeviceServiceFactory(device=device, name="db")
    response = admin_api.patch(
        f"/api/v1/devices/{device.uuid}/",
        {"services": {"cache": {"image": "redis", "tag": "7"}}},
        format="json",
    )
    assert response.status_code == 400
    assert DeviceService.objects.filter(device=device).count() == 2
    response = admin_api.post(
        "/api/v1/devices/",
        {
            "fleet": FleetFactory().slug,
            "services": {name: {"image": "redis"} for name in ("a", "b", "c")},
        },
        format="json",
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "service",
    [
        {"image": "a" * 256},
        # Within 255 as sent, beyond once normalized (docker.io/library/...).
        {"image": "a" * 250},
        {"tag": "t" * 129},
        {"digest": "sha256:" + "a" * 100},
    ],
)
def test_every_string_of_a_report_has_a_length_limit(api_client, service):
    device = DeviceFactory()
    response = report(api_client, device, {"services": {"web": service}})
    assert response.status_code == 400
    assert not DeviceService.objects.exists()


def test_a_service_name_and_a_device_name_have_length_limits(api_client):
    device = DeviceFactory()
    assert report(api_client, device, {"services": services(1) | {"s" * 101: {}}}).status_code == 400
    assert register(api_client, {"name": "n" * 201}).status_code == 400
    assert register(api_client, {"tags": ["t" * 65]}).status_code == 400
