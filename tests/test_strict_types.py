"""The operator API takes JSON types strictly, as the agent endpoints do
(tests/test_agent_bodies.py): a value of the wrong type is a 400 naming the
field, never coerced into stored data. Unknown filter values are 400s too."""

import pytest

from devices.models import Fleet
from rollouts.models import ImagePolicy

from .factories import FleetFactory
from .rollout_helpers import policy


def test_a_fleet_named_by_a_number_is_a_400_and_creates_nothing(admin_api):
    response = admin_api.post("/api/v1/fleets/", {"slug": "lab", "name": 12}, format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"name": ["Must be a JSON string, not number."]}
    assert not Fleet.objects.exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_failure_rate", "0.2"),
        ("min_failure_samples", "5"),
        ("min_failure_samples", 5.0),
        ("health_check_enabled", "true"),
        ("enabled", 1),
        ("update_strategy", 3),
        ("image_pattern", ["docker.io/a/*:*"]),
    ],
)
def test_a_policy_field_of_the_wrong_type_is_a_400_and_changes_nothing(admin_api, field, value):
    existing = policy()
    response = admin_api.patch(f"/api/v1/image-policies/{existing.pk}/", {field: value}, format="json")
    assert response.status_code == 400, response.json()
    assert list(response.json()["fields"]) == [field]
    assert ImagePolicy.objects.get(pk=existing.pk).updated_at == existing.updated_at


def test_a_device_service_of_the_wrong_type_is_a_400(admin_api):
    fleet = FleetFactory()
    body = {"fleet": fleet.slug, "services": {"web": {"image": 5, "tag": "v1"}}}
    response = admin_api.post("/api/v1/devices/", body, format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"services": {"web": {"image": ["Must be a JSON string, not number."]}}}


def test_a_manual_trigger_naming_its_policy_by_a_string_is_a_400(admin_api):
    existing = policy()
    body = {"image": "docker.io/iotistic/myapp", "tag": "v2", "policy": str(existing.pk)}
    response = admin_api.post("/api/v1/rollouts/", body, format="json")
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["policy"]


@pytest.mark.parametrize(
    "query",
    ["page_size=abc", "page_size=0", "page_size=-3", "policy=1.5", "policy=0", "active=yes", "status=bogus"],
)
def test_a_filter_or_page_size_it_cannot_read_is_a_400(admin_api, query):
    response = admin_api.get(f"/api/v1/rollouts/?{query}")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


def test_a_page_past_the_last_is_a_404(admin_api):
    for page in ("0", "2"):
        response = admin_api.get(f"/api/v1/rollouts/?page={page}")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
