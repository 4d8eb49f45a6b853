"""Operator API: /api/v1/devices/."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from devices.keys import hash_key
from devices.models import Device, DeviceService
from tests.factories import DeviceFactory, DeviceServiceFactory, FleetFactory

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def create(client, **body):
    return client.post("/api/v1/devices/", {"fleet": "lab", **body}, format="json")


def patch(client, device, body):
    return client.patch(f"/api/v1/devices/{device.uuid}/", body, format="json")


def listed(client, query=""):
    response = client.get(f"/api/v1/devices/{query}")
    assert response.status_code == 200, response.content
    return [row["name"] for row in response.json()["results"]]


# --- Authentication and permissions ---


def test_it_answers_401_without_credentials(api_client):
    response = api_client.get("/api/v1/devices/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


@pytest.mark.parametrize(
    "method, body, needed",
    [
        ("get", None, "view_device"),
        ("post", {"fleet": "lab", "name": "n"}, "add_device"),
        ("patch", {"name": "renamed"}, "change_device"),
        ("delete", None, "delete_device"),
    ],
)
def test_it_needs_the_model_permission(make_operator, method, body, needed):
    device = DeviceFactory(fleet__slug="lab", name="kept")
    others = {"view_device", "add_device", "change_device", "delete_device"} - {needed}
    client = make_operator(*(f"devices.{codename}" for codename in others))
    url = "/api/v1/devices/" if method == "post" else f"/api/v1/devices/{device.uuid}/"
    response = getattr(client, method)(url, body, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"
    assert list(Device.objects.values_list("name", flat=True)) == ["kept"]


# --- Create ---


def test_it_creates_a_device_with_normalized_targets(admin_api):
    FleetFactory(slug="lab")
    response = create(
        admin_api,
        name="pi-1",
        tags=["eu", "lab"],
        services={
            "web": {"image": "Iotistic/MyApp", "tag": "v2.0.1", "digest": DIGEST},
            "db": {"image": "postgres:16"},
            "cache": {"image": "redis"},
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["fleet"], body["tags"]) == ("pi-1", "lab", ["eu", "lab"])
    assert body["target_version"] == 1
    targets = {name: service["target"] for name, service in body["services"].items()}
    assert {name: (t["image"], t["tag"], t["digest"]) for name, t in targets.items()} == {
        "web": ("docker.io/iotistic/myapp", "v2.0.1", DIGEST),
        "db": ("docker.io/library/postgres", "16", None),
        "cache": ("docker.io/library/redis", "latest", None),
    }


def test_it_returns_the_api_key_once_and_it_polls(admin_api, api_client):
    FleetFactory(slug="lab")
    body = create(admin_api, services={"web": {"image": "nginx", "tag": "1.25"}}).json()
    key = body["api_key"]
    assert Device.objects.get(uuid=body["uuid"]).api_key_hash == hash_key(key)
    detail = admin_api.get(f"/api/v1/devices/{body['uuid']}/").json()
    assert "api_key" not in detail and "api_key_hash" not in detail
    assert all("api_key" not in row for row in admin_api.get("/api/v1/devices/").json()["results"])
    poll = api_client.get(
        f"/api/v1/device/{body['uuid']}/state", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert poll.status_code == 200
    assert poll.json()["services"]["web"]["image"] == "docker.io/library/nginx"


def test_it_creates_a_device_with_a_given_uuid_and_409s_on_a_repeat(admin_api):
    FleetFactory(slug="lab")
    wanted = uuid.uuid4()
    assert create(admin_api, uuid=wanted.hex).json()["uuid"] == str(wanted)
    again = create(admin_api, uuid=str(wanted))
    assert again.status_code == 409
    assert again.json()["error"] == "device_exists"
    assert Device.objects.count() == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"fleet": "nope"}, "fleet"),
        ({"fleet": None}, "fleet"),
        ({"services": {"web": {"image": "not a ref!!"}}}, "services"),
        ({"services": {"web": {"image": "nginx:1.25", "tag": "1.26"}}}, "services"),
        ({"services": {"web": {"image": f"nginx@{DIGEST}", "digest": OTHER}}}, "services"),
        ({"services": {"web": {"image": "nginx", "tag": "bad tag"}}}, "services"),
        ({"services": {"web": {"image": "nginx", "digest": "sha256:abc"}}}, "services"),
        ({"services": {"web": {"tag": "1"}}}, "services"),
        ({"services": {"bad name!": {"image": "nginx"}}}, "services"),
        ({"services": ["web"]}, "services"),
        ({"tags": "eu"}, "tags"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"uuid": 7}, "uuid"),
    ],
)
def test_it_rejects_an_invalid_device(admin_api, body, field):
    FleetFactory(slug="lab")
    response = create(admin_api, **body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["fields"]
    assert not Device.objects.exists()


# --- Read ---


def test_it_shows_target_previous_and_reported_state_per_service(admin_api):
    service = DeviceServiceFactory(
        previous_image="docker.io/iotistic/myapp",
        previous_tag="v0.9.0",
        reported_image="docker.io/iotistic/myapp",
        reported_tag="v0.9.0",
        reported_status="running",
        reported_health="healthy",
        reported_at=timezone.now(),
    )
    body = admin_api.get(f"/api/v1/devices/{service.device.uuid}/").json()
    web = body["services"]["web"]
    assert (web["target"]["tag"], web["previous"]["tag"], web["reported"]["tag"]) == (
        "v1.0.0",
        "v0.9.0",
        "v0.9.0",
    )
    assert (web["reported"]["status"], web["reported"]["health"]) == ("running", "healthy")


@pytest.mark.parametrize("spelling", [str.upper, lambda text: text.replace("-", "")])
def test_it_finds_a_device_by_any_uuid_spelling(admin_api, spelling):
    device = DeviceFactory()
    response = admin_api.get(f"/api/v1/devices/{spelling(str(device.uuid))}/")
    assert response.status_code == 200
    assert response.json()["uuid"] == str(device.uuid)


@pytest.mark.parametrize("path", ["not-a-uuid", str(uuid.uuid4())])
def test_it_answers_404_json_for_an_unknown_device(admin_api, path):
    response = admin_api.get(f"/api/v1/devices/{path}/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_it_filters_by_fleet_and_tag(admin_api):
    DeviceFactory(name="a", fleet__slug="lab", tags=["eu", "beta"])
    DeviceFactory(name="b", fleet__slug="prod", tags=["eu"])
    DeviceFactory(name="c", fleet__slug="edge", tags=["us"])
    assert listed(admin_api, "?fleet=lab") == ["a"]
    assert listed(admin_api, "?tag=eu") == ["a", "b"]
    assert listed(admin_api, "?tag=eu&fleet=prod") == ["b"]
    assert listed(admin_api, "?tag=none") == []


def test_it_filters_by_online(admin_api):
    now = timezone.now()
    DeviceFactory(name="fresh", last_seen_at=now - timedelta(seconds=30))
    DeviceFactory(name="stale", last_seen_at=now - timedelta(hours=1))
    DeviceFactory(name="never", last_seen_at=None)
    assert listed(admin_api, "?online=true") == ["fresh"]
    assert listed(admin_api, "?online=false") == ["stale", "never"]
    rows = admin_api.get("/api/v1/devices/").json()["results"]
    assert {row["name"]: row["online"] for row in rows} == {
        "fresh": True,
        "stale": False,
        "never": False,
    }


def test_it_rejects_an_invalid_online_filter(admin_api):
    response = admin_api.get("/api/v1/devices/?online=maybe")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


def test_it_paginates_with_page_size(admin_api):
    DeviceFactory.create_batch(3)
    body = admin_api.get("/api/v1/devices/?page_size=2").json()
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["previous"] is None
    assert "page=2" in body["next"]
    second = admin_api.get(body["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None


def test_it_caps_page_size_at_1000(admin_api):
    fleet = FleetFactory()
    Device.objects.bulk_create(
        Device(fleet=fleet, name=f"d{n}", api_key_hash=f"{n:064x}") for n in range(1001)
    )
    body = admin_api.get("/api/v1/devices/?page_size=5000").json()
    assert body["count"] == 1001
    assert len(body["results"]) == 1000
    assert body["next"] is not None


def test_it_lists_in_a_fixed_number_of_queries(admin_api, django_assert_max_num_queries):
    def queries_for_list():
        with django_assert_max_num_queries(100) as captured:
            assert admin_api.get("/api/v1/devices/").status_code == 200
        return len(captured.captured_queries)

    DeviceServiceFactory(device=DeviceFactory(tags=["a"]))
    one = queries_for_list()
    for _ in range(4):
        DeviceServiceFactory(device=DeviceFactory(tags=["a", "b"]))
    assert queries_for_list() == one


# --- Update: a PATCH with services is a manual deployment ---


def test_it_accepts_the_same_digest_in_the_image_and_the_digest_field(admin_api):
    FleetFactory(slug="lab")
    service = {"image": f"nginx:1@{DIGEST.upper().replace('SHA', 'sha')}", "digest": DIGEST}
    response = create(admin_api, services={"web": service})
    assert response.status_code == 201, response.content
    assert response.json()["services"]["web"]["target"]["digest"] == DIGEST


def test_it_deploys_manually_keeping_the_previous_target(admin_api):
    service = DeviceServiceFactory(target_tag="v1.0.0", target_digest=DIGEST)
    device = service.device
    response = patch(admin_api, device, {"services": {"web": {"image": "iotistic/myapp:v2.0.0"}}})
    assert response.status_code == 200
    assert response.json()["target_version"] == 2
    assert response.json()["services"]["web"]["target"]["tag"] == "v2.0.0"
    service.refresh_from_db()
    assert (service.target_tag, service.target_digest) == ("v2.0.0", None)
    assert (service.previous_image, service.previous_tag, service.previous_digest) == (
        "docker.io/iotistic/myapp",
        "v1.0.0",
        DIGEST,
    )


def test_it_bumps_target_version_once_per_deployment(admin_api):
    device = DeviceServiceFactory().device
    Device.objects.filter(pk=device.pk).update(target_version=41)
    body = {"services": {"web": {"image": "nginx", "tag": "2"}, "db": {"image": "postgres"}}}
    assert patch(admin_api, device, body).json()["target_version"] == 42
    device.refresh_from_db()
    assert device.target_version == 42
    assert DeviceService.objects.get(device=device, name="db").previous_image is None


def test_it_leaves_target_version_alone_without_services(admin_api):
    device = DeviceServiceFactory().device
    response = patch(admin_api, device, {"name": "renamed", "tags": ["x", "y"]})
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["tags"]) == ("renamed", ["x", "y"])
    assert response.json()["target_version"] == 1
    assert patch(admin_api, device, {"tags": ["y"]}).json()["tags"] == ["y"]


def test_it_keeps_uuid_and_fleet_on_patch(admin_api):
    device = DeviceFactory(fleet__slug="lab")
    FleetFactory(slug="other")
    response = patch(admin_api, device, {"uuid": str(uuid.uuid4()), "fleet": "other"})
    assert response.status_code == 200
    assert (response.json()["uuid"], response.json()["fleet"]) == (str(device.uuid), "lab")


@pytest.mark.parametrize(
    "body",
    [
        {"services": {"web": {"image": "not a ref!!"}}},
        {"services": {"web": None}},
        {"tags": [["nested"]]},
        {"name": "x" * 201},
    ],
)
def test_it_rejects_an_invalid_patch_and_changes_nothing(admin_api, body):
    service = DeviceServiceFactory()
    response = patch(admin_api, service.device, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    service.refresh_from_db()
    assert service.target_tag == "v1.0.0"
    assert Device.objects.get(pk=service.device_id).target_version == 1


def test_it_deletes_a_device(admin_api):
    device = DeviceServiceFactory().device
    assert admin_api.delete(f"/api/v1/devices/{device.uuid}/").status_code == 204
    assert not Device.objects.exists()
    assert not DeviceService.objects.exists()
