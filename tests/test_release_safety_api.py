"""CONTRACT section 8 through the operator API: the policy fields of release
safety, their defaults and their validation."""

from collections import Counter

import pytest

from devices.models import Device, DeviceService
from rollouts.models import ImagePolicy, Rollout, RolloutDevice

from .rollout_helpers import (
    T0,
    build_fleet,
    event_counts,
    policy,
    push,
    report,
    scheduled_device_ids,
    seconds,
    statuses,
    tick,
)

pytestmark = pytest.mark.django_db


def test_it_creates_a_policy_with_the_release_safety_defaults(admin_api):
    response = admin_api.post("/api/v1/image-policies/", {"image_pattern": "iotistic/*"}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["device_update_strategy"] == "download-then-kill"
    assert body["stop_timeout_seconds"] == 10


@pytest.mark.parametrize(
    "field, value",
    [
        ("device_update_strategy", "kill-then-pray"),
        ("stop_timeout_seconds", -1),
        ("stop_timeout_seconds", "10s"),
        ("stop_timeout_seconds", 10**12),
    ],
)
def test_it_rejects_invalid_release_safety_fields_with_a_400(admin_api, field, value):
    body = {"image_pattern": "iotistic/*", field: value}

    response = admin_api.post("/api/v1/image-policies/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["fields"]
    assert not ImagePolicy.objects.exists()


def test_it_copies_the_device_update_strategy_onto_the_rollout(admin_api):
    build_fleet(2)
    policy(device_update_strategy="delete-then-download", stop_timeout_seconds=0)

    rollout = push()
    body = admin_api.get(f"/api/v1/rollouts/{rollout.pk}/").json()

    assert (body["device_update_strategy"], body["stop_timeout_seconds"]) == (
        "delete-then-download",
        0,
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("ramp_initial", 0),
        ("ramp_initial", 2.5),
        ("ramp_factor", 1),
        ("ramp_factor", 0.5),
        ("ramp_factor", "NaN"),
        ("max_retries", 11),
        ("max_retries", -1),
    ],
)
def test_it_rejects_an_invalid_ramp_or_retry_setting_with_a_400(admin_api, field, value):
    body = {"image_pattern": "iotistic/*", field: value}

    response = admin_api.post("/api/v1/image-policies/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert not ImagePolicy.objects.exists()


def test_a_fresh_policy_ramps_and_does_not_retry(admin_api):
    body = admin_api.post("/api/v1/image-policies/", {"image_pattern": "iotistic/*"}, format="json").json()

    assert (body["ramp_initial"], body["ramp_factor"], body["max_retries"]) == (10, 2.0, 0)
    changed = admin_api.patch(f"/api/v1/image-policies/{body['id']}/", {"ramp_initial": None}, format="json")
    assert changed.status_code == 200 and changed.json()["ramp_initial"] is None


# --- POST /rollouts/{id}/retry ----------------------------------------------


def _paused_by_a_breach():
    build_fleet(10)
    policy(update_strategy="auto", min_failure_samples=1)
    rollout = push(now=T0)
    ids = sorted(scheduled_device_ids(rollout))
    report(ids[:3], tag="v2.0.0", status="exited", health="none", at=T0 + seconds(30))
    report(ids[3:5], tag="v2.0.0", at=T0 + seconds(30))
    tick(T0 + seconds(30))
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    return rollout, ids


def test_retry_sends_failed_and_rolled_back_devices_the_release_again_and_resumes(admin_api):
    rollout, ids = _paused_by_a_breach()
    assert statuses(rollout) == Counter(
        {("rolled_back", "crashed"): 3, ("rolled_back", ""): 5, ("healthy", ""): 2}
    )
    before = dict(Device.objects.values_list("pk", "target_version"))

    response = admin_api.post(f"/api/v1/rollouts/{rollout.pk}/retry")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "in_progress"
    assert response.json()["counts"]["scheduled"] == 8
    retried = set(RolloutDevice.objects.filter(rollout=rollout, attempts=2).values_list("device_id", flat=True))
    assert retried == set(ids[:3] + ids[5:])
    versions = dict(Device.objects.values_list("pk", "target_version"))
    assert all(versions[pk] == before[pk] + 1 for pk in retried)
    tags = DeviceService.objects.filter(device_id__in=retried).values_list("target_tag", flat=True)
    assert set(tags) == {"v2.0.0"}
    events = event_counts(rollout)
    assert (events["rollout_retried"], events["device_retried"], events["rollout_resumed"]) == (1, 8, 1)
    listed = admin_api.get(f"/api/v1/rollouts/{rollout.pk}/devices/?status=scheduled").json()
    assert {row["attempts"] for row in listed["results"]} == {2}


@pytest.mark.parametrize("status", ["pending", "completed", "cancelled", "rolled_back", "superseded"])
def test_retry_answers_409_when_the_status_forbids_it(admin_api, status):
    rollout, _ = _paused_by_a_breach()
    Rollout.objects.filter(pk=rollout.pk).update(status=status)

    response = admin_api.post(f"/api/v1/rollouts/{rollout.pk}/retry")

    assert response.status_code == 409
    assert response.json()["error"] == "invalid_transition"
    assert not rollout.events.filter(event_type="image.rollout_retried").exists()
