"""Every error answer is JSON `{"error", "detail"}`, never a 500 (CONTRACT.md)."""

import pytest

from devices.models import Device
from tests.factories import DeviceFactory, DeviceServiceFactory

pytestmark = pytest.mark.django_db


def assert_json_error(response, status, error):
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/nope/", "/api/v1/device/", "/nope"])
def test_it_answers_404_json_to_an_unknown_url(client, path):
    assert_json_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "method, path",
    [("put", "/api/v1/fleets/"), ("delete", "/api/v1/devices/"), ("post", "/api/v1/fleets/x/")],
)
def test_it_answers_405_json_to_a_wrong_method(admin_api, method, path):
    assert_json_error(getattr(admin_api, method)(path), 405, "method_not_allowed")


def test_it_answers_405_json_on_the_ops_endpoints(client):
    assert_json_error(client.post("/healthz"), 405, "method_not_allowed")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_it_answers_415_json_to_a_body_that_is_not_json(admin_api, content_type):
    response = admin_api.post("/api/v1/fleets/", "slug=x&name=y", content_type=content_type)
    assert_json_error(response, 415, "unsupported_media_type")


def test_it_answers_400_json_to_malformed_json(admin_api):
    response = admin_api.post(
        "/api/v1/fleets/", '{"slug": "x",', content_type="application/json"
    )
    assert_json_error(response, 400, "parse_error")


def test_it_answers_400_json_to_json_nested_too_deeply(admin_api):
    response = admin_api.post("/api/v1/fleets/", "[" * 100_000, content_type="application/json")
    assert_json_error(response, 400, "parse_error")


@pytest.mark.parametrize("body", ["[]", '[{"name": "x"}]', "3", '"text"', "null"])
def test_it_answers_400_to_a_device_patch_that_is_not_an_object(admin_api, body):
    service = DeviceServiceFactory()
    response = admin_api.patch(
        f"/api/v1/devices/{service.device.uuid}/", body, content_type="application/json"
    )
    assert_json_error(response, 400, "invalid")
    assert Device.objects.get(pk=service.device_id).name == service.device.name


def test_it_answers_400_json_to_a_device_create_that_is_not_an_object(admin_api):
    response = admin_api.post("/api/v1/devices/", "[1, 2]", content_type="application/json")
    assert_json_error(response, 400, "invalid")
    assert not Device.objects.exists()


def test_it_answers_404_json_for_a_device_of_another_spelling_that_does_not_exist(admin_api):
    DeviceFactory()
    response = admin_api.get("/api/v1/devices/00000000000000000000000000000000/")
    assert_json_error(response, 404, "not_found")


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_it_answers_404_to_a_fleet_slug_that_cannot_be_one(admin_api, method):
    # A NUL would reach PostgreSQL, which refuses it in text.
    response = getattr(admin_api, method)("/api/v1/fleets/a%00b/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_it_answers_400_to_a_device_in_a_fleet_slug_that_cannot_be_one(admin_api):
    body = {"name": "d", "fleet": "a\u0000b"}
    response = admin_api.post("/api/v1/devices/", body, format="json")
    assert response.status_code == 400
    assert "fleet" in response.json()["fields"]


def test_it_answers_401_to_a_token_that_cannot_be_one(client):
    response = client.get("/api/v1/devices/", HTTP_AUTHORIZATION="Token a\x00b")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_it_answers_400_to_too_many_tags(admin_api):
    from tests.factories import FleetFactory

    fleet = FleetFactory()
    body = {"name": "d", "fleet": fleet.slug, "tags": [f"t{n}" for n in range(51)]}
    response = admin_api.post("/api/v1/devices/", body, format="json")
    assert response.status_code == 400
    assert "tags" in response.json()["fields"]
