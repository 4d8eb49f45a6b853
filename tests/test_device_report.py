"""PATCH /api/v1/device/{uuid}/state: the agent reports what it runs."""

import json

import pytest
from django.utils import timezone

from devices.models import Device, DeviceService
from tests.factories import DeviceFactory, DeviceServiceFactory

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "9f86d0" + "a" * 58


def report(client, device, body, path_uuid=None, key=None):
    return client.patch(
        f"/api/v1/device/{path_uuid or device.uuid}/state",
        data=body if isinstance(body, (str, bytes)) else json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key or device.api_key}",
    )


def snapshot():
    return (
        list(Device.objects.order_by("id").values()),
        list(DeviceService.objects.order_by("id").values()),
    )


def good_service(**overrides):
    return {
        "image": "docker.io/iotistic/myapp",
        "tag": "v2.0.1",
        "digest": DIGEST,
        "status": "running",
        "health": "healthy",
        **overrides,
    }


def test_it_stores_a_report_and_accepts_it(api_client):
    device = DeviceServiceFactory().device
    Device.objects.filter(pk=device.pk).update(target_version=7)
    before = timezone.now()
    response = report(
        api_client, device, {"target_version": 6, "services": {"web": good_service()}}
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": True, "target_version": 7}
    service = DeviceService.objects.get(device=device, name="web")
    assert (service.reported_image, service.reported_tag, service.reported_digest) == (
        "docker.io/iotistic/myapp",
        "v2.0.1",
        DIGEST,
    )
    assert (service.reported_status, service.reported_health) == ("running", "healthy")
    assert service.reported_at >= before
    device.refresh_from_db()
    assert device.reported_target_version == 6
    assert device.last_seen_at == device.last_report_at == service.reported_at


def test_it_keeps_the_target_when_storing_a_report(api_client):
    service = DeviceServiceFactory()
    report(api_client, service.device, {"services": {"web": good_service(tag="v0.9")}})
    service.refresh_from_db()
    assert (service.target_image, service.target_tag) == ("docker.io/iotistic/myapp", "v1.0.0")
    assert service.reported_tag == "v0.9"


@pytest.mark.parametrize(
    "image, repository, tag",
    [
        ("myapp", "docker.io/library/myapp", None),
        ("library/nginx:1.25", "docker.io/library/nginx", "1.25"),
        ("index.docker.io/Iotistic/MyApp", "docker.io/iotistic/myapp", None),
        ("ghcr.io/Org/App:v1", "ghcr.io/org/app", "v1"),
    ],
)
def test_it_normalizes_the_reported_image(api_client, image, repository, tag):
    device = DeviceFactory()
    body = {"services": {"web": {"image": image, "status": "running"}}}
    assert report(api_client, device, body).status_code == 200
    service = DeviceService.objects.get(device=device)
    assert (service.reported_image, service.reported_tag) == (repository, tag)


def test_it_keeps_a_report_for_a_service_without_a_target(api_client):
    device = DeviceFactory()
    report(api_client, device, {"services": {"sidecar": good_service()}})
    service = DeviceService.objects.get(device=device, name="sidecar")
    assert service.target_image is None
    assert service.reported_status == "running"


def test_it_ignores_unknown_fields(api_client):
    device = DeviceFactory()
    body = {"agent": "v9", "services": {"web": good_service(uptime=12)}, "target_version": 1}
    assert report(api_client, device, body).status_code == 200
    assert DeviceService.objects.get(device=device).reported_health == "healthy"


def test_it_accepts_an_empty_report_as_a_sign_of_life(api_client):
    device = DeviceFactory()
    assert report(api_client, device, {}).status_code == 200
    device.refresh_from_db()
    assert device.last_seen_at is not None
    assert not DeviceService.objects.filter(device=device).exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"target_version": "abc"}, "target_version"),
        ({"target_version": -1}, "target_version"),
        ({"target_version": 2**63}, "target_version"),
        ({"target_version": 1.5}, "target_version"),
        ({"services": ["web"]}, "services"),
        ({"services": "web"}, "services"),
        ({"services": {"web": "nginx"}}, "services"),
        ({"services": {"web": None}}, "services"),
        ({"services": {"web": good_service(status="bogus")}}, "services"),
        ({"services": {"web": good_service(health=5)}}, "services"),
        ({"services": {"web": good_service(image="not a ref!!")}}, "services"),
        ({"services": {"web": good_service(image=["nginx"])}}, "services"),
        ({"services": {"web": good_service(digest="sha256:short")}}, "services"),
        ({"services": {"web": good_service(tag="bad tag")}}, "services"),
        ({"services": {"web": good_service(tag="x" * 129)}}, "services"),
        ({"services": {"bad name!": good_service()}}, "services"),
        ({"services": {"web\n": good_service()}}, "services"),
        ({"services": {"web": good_service(image="nginx\x00")}}, "services"),
    ],
)
def test_it_rejects_wrong_types_and_changes_nothing(api_client, body, field):
    device = DeviceServiceFactory(reported_status="running", reported_health="healthy").device
    before = snapshot()
    response = report(api_client, device, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert response.json()["detail"]
    assert field in response.json()["fields"]
    assert snapshot() == before


@pytest.mark.parametrize("body", ["{not json", b"\xff\xfe", '{"services": {', "[" * 100_000])
def test_it_rejects_malformed_json(api_client, body):
    device = DeviceFactory()
    before = snapshot()
    response = report(api_client, device, body)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert snapshot() == before


@pytest.mark.parametrize("body", [[], ["web"], "3", "null", '"text"'])
def test_it_rejects_a_body_that_is_not_an_object(api_client, body):
    device = DeviceFactory()
    response = report(api_client, device, body if isinstance(body, str) else json.dumps(body))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


def test_it_answers_404_to_a_report_with_another_devices_key(api_client):
    device, other = DeviceServiceFactory().device, DeviceFactory()
    before = snapshot()
    response = report(api_client, device, {"services": {"web": good_service()}}, key=other.api_key)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert snapshot() == before


def test_it_answers_401_to_a_report_without_a_key(api_client):
    device = DeviceFactory()
    response = api_client.patch(
        f"/api/v1/device/{device.uuid}/state", data="{}", content_type="application/json"
    )
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_it_answers_401_to_a_report_with_an_unknown_key(api_client):
    device = DeviceFactory()
    response = report(api_client, device, {}, key="unknown")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


# Auth (with the count of stored services), then one statement: the
# INSERT .. ON CONFLICT of the services inside the UPDATE of the device.
REPORT_QUERIES = 2


@pytest.mark.parametrize("count", [1, 5])
def test_it_stores_a_report_in_a_fixed_number_of_queries(
    api_client, django_assert_num_queries, count
):
    device = DeviceFactory()
    services = {f"svc{n}": good_service() for n in range(count)}
    with django_assert_num_queries(REPORT_QUERIES):
        assert report(api_client, device, {"services": services}).status_code == 200
    assert DeviceService.objects.filter(device=device, reported_status="running").count() == count


def test_it_keeps_fields_a_partial_report_leaves_out(api_client):
    service = DeviceServiceFactory()
    report(api_client, service.device, {"target_version": 1, "services": {"web": good_service()}})
    response = report(api_client, service.device, {"services": {"web": {"health": "unhealthy"}}})
    assert response.status_code == 200
    service.refresh_from_db()
    assert (service.reported_image, service.reported_tag) == ("docker.io/iotistic/myapp", "v2.0.1")
    assert service.reported_digest == DIGEST
    assert (service.reported_status, service.reported_health) == ("running", "unhealthy")
    assert Device.objects.get(pk=service.device_id).reported_target_version == 1


def test_it_forgets_the_old_health_when_a_report_names_a_new_release(api_client):
    service = DeviceServiceFactory()
    report(api_client, service.device, {"services": {"web": good_service(health="unhealthy")}})
    # The new container just started; this agent sends no health yet.
    report(api_client, service.device, {"services": {"web": {"image": "iotistic/myapp", "tag": "v3"}}})
    service.refresh_from_db()
    assert (service.reported_tag, service.reported_status, service.reported_health) == ("v3", None, None)


def test_a_service_first_seen_in_a_report_gets_the_models_defaults(api_client):
    device = DeviceFactory()
    assert report(api_client, device, {"services": {"sidecar": {"status": "running"}}}).status_code == 200
    stored = DeviceService.objects.get(device=device, name="sidecar")
    fresh = DeviceService(device=device, name="sidecar")
    for field in ("pinned", "update_strategy", "stop_timeout_seconds", "target_image"):
        assert getattr(stored, field) == getattr(fresh, field), field
    assert stored.reported_status == "running"
