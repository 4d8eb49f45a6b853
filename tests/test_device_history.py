"""Per-service history: every target change adds a row, with its source and outcome."""

import pytest

from devices.models import Device, DeviceService, ServiceHistory
from rollouts.models import RolloutDevice

from .factories import FleetFactory
from .rollout_helpers import (
    IMAGE,
    T0,
    build_fleet,
    minutes,
    policy,
    push,
    report,
    scheduled_device_ids,
    tick,
)

pytestmark = pytest.mark.django_db


def create_device(api, **services):
    fleet = FleetFactory()
    body = {"name": "d", "fleet": fleet.slug, "services": services}
    response = api.post("/api/v1/devices/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["uuid"]


def history(api, uuid, query=""):
    response = api.get(f"/api/v1/devices/{uuid}/history/{query}")
    assert response.status_code == 200, response.json()
    return response.json()


def test_it_records_registration_then_manual_changes_newest_first(admin_api):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.0"})
    admin_api.patch(
        f"/api/v1/devices/{uuid}/", {"services": {"web": {"image": "iotistic/myapp", "tag": "1.1"}}},
        format="json",
    )
    rows = history(admin_api, uuid)["results"]
    assert [(row["tag"], row["source"]) for row in rows] == [("1.1", "manual"), ("1.0", "registration")]
    assert set(rows[0]) == {
        "service", "image", "tag", "digest", "source", "rollout_id", "deployed_at", "replaced_at", "outcome",
    }
    assert rows[0]["replaced_at"] is None
    assert rows[1]["replaced_at"] == rows[0]["deployed_at"]
    assert rows[0]["image"] == "docker.io/iotistic/myapp"


def test_it_filters_history_by_service(admin_api):
    uuid = create_device(
        admin_api, web={"image": "iotistic/myapp", "tag": "1.0"}, db={"image": "postgres", "tag": "16"}
    )
    rows = history(admin_api, uuid, "?service=db")["results"]
    assert [(row["service"], row["image"]) for row in rows] == [("db", "docker.io/library/postgres")]


def test_it_keeps_the_newest_rows_per_service(admin_api, settings):
    assert settings.DEVICE_HISTORY_KEEP == 10
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "0"})
    for number in range(1, 13):
        admin_api.patch(
            f"/api/v1/devices/{uuid}/", {"services": {"web": {"tag": str(number)}}}, format="json"
        )
    rows = history(admin_api, uuid)["results"]
    assert [row["tag"] for row in rows] == [str(number) for number in range(12, 2, -1)]
    # Trimmed in the statement that closed the replaced row and added the new one.
    assert rows[0]["replaced_at"] is None
    assert [row["replaced_at"] for row in rows[1:]] == [row["deployed_at"] for row in rows[:-1]]


def test_history_needs_the_view_permission_and_a_known_device(admin_api, make_operator):
    uuid = create_device(admin_api, web={"image": "iotistic/myapp", "tag": "1.0"})
    assert make_operator().get(f"/api/v1/devices/{uuid}/history/").status_code == 403
    viewer = make_operator("devices.view_device")
    assert viewer.get(f"/api/v1/devices/{uuid}/history/").status_code == 200
    missing = admin_api.get("/api/v1/devices/00000000-0000-0000-0000-000000000000/history/")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


def test_a_rollout_adds_rows_with_outcomes_in_set_based_statements():
    build_fleet(20)
    policy(update_strategy="auto", max_failure_rate=0.5, min_failure_samples=100)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[:15], tag="v2.0.0", at=T0 + minutes(1))
    report(ids[15:], tag="v2.0.0", health="unhealthy", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    rows = ServiceHistory.objects.filter(rollout_id=rollout.pk, source="rollout")
    assert rows.count() == 20
    assert dict(rows.values_list("device_id", "outcome"))[ids[0]] == "healthy"
    assert sorted(rows.values_list("outcome", flat=True)) == ["failed"] * 5 + ["healthy"] * 15
    assert set(rows.values_list("tag", flat=True)) == {"v2.0.0"}


def test_a_rollback_closes_the_rollout_row_and_adds_a_rollback_row():
    build_fleet(10)
    policy(update_strategy="auto", max_failure_rate=0.1, min_failure_samples=1)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    report(ids, tag="v2.0.0", status="exited", health="none", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    assert set(RolloutDevice.objects.filter(rollout=rollout).values_list("status", flat=True)) == {"rolled_back"}
    newest = ServiceHistory.objects.filter(device_id=ids[0]).order_by("-deployed_at", "-id")
    assert [(row.source, row.tag, row.outcome) for row in newest] == [
        ("rollback", "v1.0.0", None),
        ("rollout", "v2.0.0", "rolled_back"),
    ]
    assert newest[1].replaced_at == newest[0].deployed_at


def test_a_pinned_service_survives_a_rollout_and_unpinning_keeps_its_target(admin_api):
    build_fleet(10)
    device = Device.objects.order_by("pk").first()
    response = admin_api.patch(
        f"/api/v1/devices/{device.uuid}/",
        {"services": {"web": {"tag": "1.42-hotfix-acme", "pinned": True}}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    web = response.json()["services"]["web"]
    assert (web["pinned"], web["target"]["tag"], web["target"]["image"]) == (True, "1.42-hotfix-acme", IMAGE)
    assert ServiceHistory.objects.filter(device=device).order_by("-id").first().source == "pin"
    assert admin_api.get("/api/v1/devices/?pinned=true").json()["count"] == 1
    assert admin_api.get("/api/v1/devices/?pinned=false").json()["count"] == 9

    policy(update_strategy="auto")
    rollout = push(now=T0)
    row = RolloutDevice.objects.get(rollout=rollout, device=device)
    assert (row.status, row.skip_reason) == ("skipped", "pinned")
    version = Device.objects.get(pk=device.pk).target_version
    assert DeviceService.objects.get(device=device).target_tag == "1.42-hotfix-acme"

    response = admin_api.patch(
        f"/api/v1/devices/{device.uuid}/", {"services": {"web": {"pinned": False}}}, format="json"
    )
    web = response.json()["services"]["web"]
    assert (web["pinned"], web["target"]["tag"]) == (False, "1.42-hotfix-acme")
    assert response.json()["target_version"] == version


def test_a_service_pinned_after_the_fan_out_is_skipped_when_its_batch_starts(admin_api):
    build_fleet(20)
    policy(batch_percentages=[50, 100], batch_delay_minutes=0)
    rollout = push(now=T0)
    later = RolloutDevice.objects.filter(rollout=rollout, batch=2).order_by("id").first()
    device = later.device
    admin_api.patch(f"/api/v1/devices/{device.uuid}/", {"services": {"web": {"pinned": True}}}, format="json")
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    tick(T0 + minutes(2))
    later.refresh_from_db()
    assert (later.status, later.skip_reason) == ("skipped", "pinned")
    assert DeviceService.objects.get(device=device).target_tag == "v1.0.0"


def skip_events(api, rollout) -> list[tuple]:
    events = api.get(f"/api/v1/rollouts/{rollout.pk}/events/?page_size=1000").json()["results"]
    return [
        (event["device_uuid"], event["data"]["service"], event["data"]["batch"], event["data"]["skip_reason"])
        for event in events
        if event["event_type"] == "image.device_skipped"
    ]


def test_every_device_a_rule_leaves_out_has_a_device_skipped_event(admin_api):
    build_fleet(10)
    pinned = Device.objects.order_by("pk").first()
    DeviceService.objects.filter(device=pinned).update(pinned=True)
    policy(update_strategy="auto")
    rollout = push(now=T0)
    assert skip_events(admin_api, rollout) == [(str(pinned.uuid), "web", None, "pinned")]


def test_a_device_skipped_when_its_batch_starts_has_its_event_once(admin_api):
    build_fleet(20)
    policy(batch_percentages=[50, 100], batch_delay_minutes=0)
    rollout = push(now=T0)
    assert skip_events(admin_api, rollout) == []
    later = RolloutDevice.objects.filter(rollout=rollout, batch=2).order_by("id").first()
    DeviceService.objects.filter(device=later.device).update(pinned=True)
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    tick(T0 + minutes(2))
    tick(T0 + minutes(3))
    assert skip_events(admin_api, rollout) == [(str(later.device.uuid), "web", 2, "pinned")]
