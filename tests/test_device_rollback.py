"""POST /api/v1/devices/{uuid}/rollback and the bad input of version changes."""

import pytest

from devices.models import Device, DeviceService, ServiceHistory

from .factories import FleetFactory

pytestmark = pytest.mark.django_db

DIGEST_41 = "sha256:" + "41" * 32


def create_device(api, **services) -> str:
    body = {"name": "d", "fleet": FleetFactory().slug, "services": services}
    response = api.post("/api/v1/devices/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["uuid"]


def deploy(api, uuid, **services):
    response = api.patch(f"/api/v1/devices/{uuid}/", {"services": services}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def rollback(api, uuid, body):
    return api.post(f"/api/v1/devices/{uuid}/rollback", body, format="json")


def target(body, service="web"):
    return body["services"][service]["target"]["tag"]


def test_it_goes_back_to_the_previous_version(admin_api):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.40"})
    deploy(admin_api, uuid, web={"tag": "1.41"})
    before = Device.objects.get(uuid=uuid).target_version
    response = rollback(admin_api, uuid, {"service": "web"})
    assert response.status_code == 200, response.json()
    assert target(response.json()) == "1.40"
    assert response.json()["target_version"] == before + 1
    newest = ServiceHistory.objects.filter(device__uuid=uuid).order_by("-id").first()
    assert (newest.source, newest.tag) == ("rollback", "1.40")


def test_it_skips_history_entries_of_the_current_version(admin_api):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.40"})
    deploy(admin_api, uuid, web={"tag": "1.41"})
    deploy(admin_api, uuid, web={"tag": "1.42"})
    deploy(admin_api, uuid, web={"tag": "1.41"})
    # Newest entry that differs from 1.41 is 1.42.
    assert target(rollback(admin_api, uuid, {"service": "web"}).json()) == "1.42"


def test_it_goes_to_a_named_tag_with_the_digest_the_history_knows(admin_api):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.41", "digest": DIGEST_41})
    deploy(admin_api, uuid, web={"tag": "1.42"})
    deploy(admin_api, uuid, web={"tag": "1.43"})
    response = rollback(admin_api, uuid, {"service": "web", "tag": "1.41"})
    assert response.status_code == 200, response.json()
    web = response.json()["services"]["web"]["target"]
    assert (web["tag"], web["digest"]) == ("1.41", DIGEST_41)


def test_it_rolls_back_every_service_that_has_a_previous_version(admin_api):
    uuid = create_device(
        admin_api,
        web={"image": "iotistic/myapp", "tag": "1.0"},
        db={"image": "postgres", "tag": "15"},
        cache={"image": "redis", "tag": "7"},
    )
    deploy(admin_api, uuid, web={"tag": "2.0"}, db={"tag": "16"})
    response = rollback(admin_api, uuid, {})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (target(body, "web"), target(body, "db"), target(body, "cache")) == ("1.0", "15", "7")


def test_it_answers_409_when_nothing_changes(admin_api):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.0"})
    version = Device.objects.get(uuid=uuid).target_version
    response = rollback(admin_api, uuid, {})
    assert (response.status_code, response.json()["error"]) == (409, "no_previous_version")
    same = rollback(admin_api, uuid, {"service": "web", "tag": "1.0"})
    assert (same.status_code, same.json()["error"]) == (409, "no_previous_version")
    assert Device.objects.get(uuid=uuid).target_version == version


def test_it_answers_404_for_an_unknown_device(admin_api):
    for uuid in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = rollback(admin_api, uuid, {})
        assert (response.status_code, response.json()["error"]) == (404, "not_found")


def test_it_needs_the_change_permission(admin_api, make_operator):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.0"})
    deploy(admin_api, uuid, web={"tag": "1.1"})
    viewer = make_operator("devices.view_device")
    response = rollback(viewer, uuid, {})
    assert (response.status_code, response.json()["error"]) == (403, "permission_denied")
    assert target(admin_api.get(f"/api/v1/devices/{uuid}/").json()) == "1.1"
    changer = make_operator("devices.view_device", "devices.change_device")
    assert rollback(changer, uuid, {}).status_code == 200


@pytest.mark.parametrize(
    "body, code",
    [
        ({"service": "nope"}, "unknown_service"),
        ({"service": "web", "tag": "x" * 129}, "invalid"),
        ({"service": "web", "tag": "1.0", "digest": "sha256:nothex"}, "invalid"),
        ({"tag": "1.0"}, "invalid"),
        ({"service": "web", "tag": "bad tag"}, "invalid"),
    ],
)
def test_bad_rollback_input_is_a_400_that_writes_nothing(admin_api, body, code):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.0"})
    deploy(admin_api, uuid, web={"tag": "1.1"})
    rows = ServiceHistory.objects.count()
    response = rollback(admin_api, uuid, body)
    assert (response.status_code, response.json()["error"]) == (400, code), response.json()
    assert response.json()["detail"]
    assert ServiceHistory.objects.count() == rows
    assert DeviceService.objects.get(device__uuid=uuid).target_tag == "1.1"


@pytest.mark.parametrize(
    "services, code",
    [
        ({"nope": {"tag": "1.0"}}, "unknown_service"),
        ({"nope": {"pinned": True}}, "unknown_service"),
        ({"web": {"tag": "x" * 129}}, "invalid"),
        ({"web": {"digest": "sha256:12"}}, "invalid"),
        ({"web": {"tag": "1.2", "pinned": "maybe"}}, "invalid"),
    ],
)
def test_bad_version_changes_are_a_400_that_writes_nothing(admin_api, services, code):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.0"})
    rows = ServiceHistory.objects.count()
    version = Device.objects.get(uuid=uuid).target_version
    response = admin_api.patch(f"/api/v1/devices/{uuid}/", {"services": services}, format="json")
    assert (response.status_code, response.json()["error"]) == (400, code), response.json()
    assert ServiceHistory.objects.count() == rows
    assert Device.objects.get(uuid=uuid).target_version == version
    assert list(DeviceService.objects.filter(device__uuid=uuid).values_list("name", "target_tag", "pinned")) == [
        ("web", "1.0", False)
    ]
