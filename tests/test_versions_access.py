"""Per-fleet access on the version endpoints: history and images for
viewers, rollback and pins for operators; other fleets are invisible."""

import pytest

from devices.models import DeviceService, ServiceHistory
from devices.services import ServiceChange, device_change_services

from .access_world import IMAGE, build_world, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    made = build_world()
    for device in (made.device_berlin, made.device_tokyo):
        device_change_services(device_id=device.pk, changes={"web": ServiceChange(tag="v1.1")})
    return made


def test_a_viewer_reads_history_of_its_fleet_only(world):
    viewer = world.client("viewer")
    assert viewer.get(f"/api/v1/devices/{world.device_berlin.uuid}/history/").status_code == 200
    outside = viewer.get(f"/api/v1/devices/{world.device_tokyo.uuid}/history/")
    assert (outside.status_code, outside.json()["error"]) == (404, "not_found")
    assert world.client("stranger").get(f"/api/v1/devices/{world.device_berlin.uuid}/history/").status_code == 403


def test_images_are_filtered_to_the_members_fleets(world):
    DeviceService.objects.filter(device=world.device_tokyo).update(target_image="docker.io/tokyo/only")
    rows = world.client("viewer").get("/api/v1/images/").json()["results"]
    assert [(row["image"], row["devices"]) for row in rows] == [(IMAGE, 1)]
    assert world.client("stranger").get("/api/v1/images/").status_code == 403


def test_rollback_needs_the_operator_role_in_the_devices_fleet(world):
    before = snapshot()
    refused = world.client("viewer").post(f"/api/v1/devices/{world.device_berlin.uuid}/rollback", {}, format="json")
    assert (refused.status_code, refused.json()["error"]) == (403, "permission_denied")
    hidden = world.client("operator").post(f"/api/v1/devices/{world.device_tokyo.uuid}/rollback", {}, format="json")
    assert hidden.status_code == 404
    assert snapshot() == before
    done = world.client("operator").post(f"/api/v1/devices/{world.device_berlin.uuid}/rollback", {}, format="json")
    assert done.status_code == 200, done.json()
    assert ServiceHistory.objects.filter(device=world.device_berlin).order_by("-id").first().source == "rollback"


def test_pinning_needs_the_operator_role(world):
    url = f"/api/v1/devices/{world.device_berlin.uuid}/"
    body = {"services": {"web": {"tag": "v1-hotfix", "pinned": True}}}
    assert world.client("viewer").patch(url, body, format="json").status_code == 403
    assert not DeviceService.objects.get(device=world.device_berlin).pinned
    response = world.client("operator").patch(url, body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["services"]["web"]["pinned"] is True
