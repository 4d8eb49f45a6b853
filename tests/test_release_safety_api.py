"""CONTRACT section 8 through the operator API: the policy fields of release
safety, their defaults and their validation."""

import pytest

from rollouts.models import ImagePolicy

from .rollout_helpers import build_fleet, policy, push

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
