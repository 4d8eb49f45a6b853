"""POST /api/v1/device/register: self-registration with a fleet provisioning key."""

import json
import uuid

import pytest

from devices.keys import hash_key
from devices.models import Device
from tests.factories import DeviceFactory, FleetFactory

pytestmark = pytest.mark.django_db


def register(client, fleet_key, body=None, raw=None):
    return client.post(
        "/api/v1/device/register",
        data=raw if raw is not None else json.dumps(body or {}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {fleet_key}",
    )


def test_it_registers_a_device_into_the_keys_fleet(api_client):
    fleet = FleetFactory()
    response = register(api_client, fleet.provisioning_key, {"name": "pi-7", "tags": ["lab", "eu"]})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"uuid", "api_key", "fleet"}
    assert body["fleet"] == fleet.slug
    device = Device.objects.get(uuid=body["uuid"])
    assert (device.fleet, device.name) == (fleet, "pi-7")
    assert sorted(device.tag_set.values_list("name", flat=True)) == ["eu", "lab"]


def test_it_returns_an_api_key_that_polls_and_is_stored_hashed(api_client):
    body = register(api_client, FleetFactory().provisioning_key).json()
    assert len(body["api_key"]) >= 43  # 32 random bytes, url-safe base64
    device = Device.objects.get(uuid=body["uuid"])
    assert device.api_key_hash == hash_key(body["api_key"])
    assert body["api_key"] not in device.api_key_hash
    poll = api_client.get(
        f"/api/v1/device/{body['uuid']}/state", HTTP_AUTHORIZATION=f"Bearer {body['api_key']}"
    )
    assert poll.status_code == 200
    assert poll.json() == {
        "uuid": body["uuid"],
        "target_version": 1,
        "services": {},
        "poll_interval_seconds": 60,
    }


def test_it_registers_with_the_given_uuid_in_any_spelling(api_client):
    wanted = uuid.uuid4()
    response = register(api_client, FleetFactory().provisioning_key, {"uuid": wanted.hex.upper()})
    assert response.status_code == 201
    assert response.json()["uuid"] == str(wanted)
    assert Device.objects.filter(uuid=wanted).exists()


def test_it_answers_409_when_the_uuid_is_registered_already(api_client):
    fleet = FleetFactory()
    wanted = str(uuid.uuid4())
    assert register(api_client, fleet.provisioning_key, {"uuid": wanted}).status_code == 201
    again = register(api_client, fleet.provisioning_key, {"uuid": wanted, "name": "x"})
    assert again.status_code == 409
    assert again.json()["error"] == "device_exists"
    assert Device.objects.filter(uuid=wanted).count() == 1


def test_it_answers_409_for_a_device_created_by_an_operator(api_client):
    device = DeviceFactory()
    response = register(api_client, FleetFactory().provisioning_key, {"uuid": str(device.uuid)})
    assert response.status_code == 409


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Token x"])
def test_it_answers_401_without_a_valid_provisioning_key(api_client, authorization):
    FleetFactory()
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = api_client.post(
        "/api/v1/device/register", data="{}", content_type="application/json", **headers
    )
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert not Device.objects.exists()


def test_it_does_not_accept_a_device_key_as_a_provisioning_key(api_client):
    device = DeviceFactory()
    assert register(api_client, device.api_key).status_code == 401
    assert Device.objects.count() == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"uuid": 12}, "uuid"),
        ({"name": ["a"]}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"tags": "lab"}, "tags"),
        ({"tags": [1.5, {"a": 1}]}, "tags"),
        ({"tags": ["bad tag!"]}, "tags"),
    ],
)
def test_it_rejects_wrong_types(api_client, body, field):
    response = register(api_client, FleetFactory().provisioning_key, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["fields"]
    assert not Device.objects.exists()


@pytest.mark.parametrize("raw, error", [("{nope", "malformed_json"), ("[]", "invalid")])
def test_it_rejects_a_body_that_is_not_a_json_object(api_client, raw, error):
    response = register(api_client, FleetFactory().provisioning_key, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_it_accepts_an_empty_body(api_client):
    fleet = FleetFactory()
    response = api_client.post(
        "/api/v1/device/register", HTTP_AUTHORIZATION=f"Bearer {fleet.provisioning_key}"
    )
    assert response.status_code == 201


def test_it_answers_405_json_to_get(api_client):
    response = api_client.get("/api/v1/device/register")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
