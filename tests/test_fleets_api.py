"""Operator API: /api/v1/fleets/."""

import pytest
from rest_framework.test import APIClient

from devices.keys import hash_key
from devices.models import Fleet
from tests.factories import DeviceFactory, FleetFactory, operator

pytestmark = pytest.mark.django_db


def test_it_answers_401_without_credentials(api_client):
    response = api_client.get("/api/v1/fleets/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"


def test_it_answers_401_to_an_unknown_token(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Token nope")
    response = api_client.get("/api/v1/fleets/")
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_it_accepts_a_session_login():
    user, _ = operator("devices.view_fleet")
    client = APIClient()
    client.force_login(user)
    assert client.get("/api/v1/fleets/").status_code == 200


@pytest.mark.parametrize(
    "method, path, body, needed",
    [
        ("get", "/api/v1/fleets/", None, "view_fleet"),
        ("get", "/api/v1/fleets/{slug}/", None, "view_fleet"),
        ("post", "/api/v1/fleets/", {"slug": "new", "name": "New"}, "add_fleet"),
        ("patch", "/api/v1/fleets/{slug}/", {"name": "Renamed"}, "change_fleet"),
        ("delete", "/api/v1/fleets/{slug}/", None, "delete_fleet"),
    ],
)
def test_it_needs_the_model_permission(make_operator, method, path, body, needed):
    fleet = FleetFactory()
    others = {"view_fleet", "add_fleet", "change_fleet", "delete_fleet"} - {needed}
    # view_ is kept so that writes are refused for the missing write
    # permission, not because the fleet cannot be seen.
    client = make_operator(*(f"devices.{codename}" for codename in others))
    url = path.format(slug=fleet.slug)
    response = getattr(client, method)(url, body, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"
    assert Fleet.objects.get(pk=fleet.pk).name == fleet.name
    allowed = make_operator(f"devices.{needed}", "devices.view_fleet")
    assert getattr(allowed, method)(url, body, format="json").status_code < 300


def test_it_lists_fleets_paginated_with_device_counts(admin_api):
    fleet = FleetFactory(slug="alpha")
    FleetFactory(slug="beta")
    DeviceFactory.create_batch(2, fleet=fleet)
    body = admin_api.get("/api/v1/fleets/").json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 2
    assert [(row["slug"], row["device_count"]) for row in body["results"]] == [
        ("alpha", 2),
        ("beta", 0),
    ]
    assert "provisioning_key" not in body["results"][0]
    assert "provisioning_key_hash" not in body["results"][0]


def test_it_creates_a_fleet_and_shows_its_provisioning_key_once(admin_api, api_client):
    response = admin_api.post("/api/v1/fleets/", {"slug": "lab", "name": "Lab"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["slug"], body["name"], body["device_count"]) == ("lab", "Lab", 0)
    key = body["provisioning_key"]
    assert Fleet.objects.get(slug="lab").provisioning_key_hash == hash_key(key)
    assert "provisioning_key" not in admin_api.get("/api/v1/fleets/lab/").json()
    registered = api_client.post("/api/v1/device/register", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert registered.status_code == 201
    assert registered.json()["fleet"] == "lab"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "No slug"}, "slug"),
        ({"slug": "has space", "name": "x"}, "slug"),
        ({"slug": "s" * 65, "name": "x"}, "slug"),
        ({"slug": "ok"}, "name"),
        ({"slug": ["ok"], "name": "x"}, "slug"),
    ],
)
def test_it_rejects_an_invalid_fleet(admin_api, body, field):
    FleetFactory(slug="taken")
    response = admin_api.post("/api/v1/fleets/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["fields"]
    assert Fleet.objects.count() == 1


def test_it_answers_409_to_a_taken_slug_and_creates_nothing(admin_api):
    FleetFactory(slug="taken", name="First")
    response = admin_api.post("/api/v1/fleets/", {"slug": "taken", "name": "Second"}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "fleet_exists"
    assert "taken" in body["detail"]
    assert list(Fleet.objects.values_list("slug", "name")) == [("taken", "First")]


def test_it_renames_a_fleet_but_keeps_its_slug(admin_api):
    fleet = FleetFactory(slug="lab")
    response = admin_api.patch("/api/v1/fleets/lab/", {"name": "Lab 2", "slug": "x"}, format="json")
    assert response.status_code == 200
    assert (response.json()["slug"], response.json()["name"]) == ("lab", "Lab 2")
    fleet.refresh_from_db()
    assert (fleet.slug, fleet.name) == ("lab", "Lab 2")


def test_it_deletes_an_empty_fleet(admin_api):
    FleetFactory(slug="lab")
    assert admin_api.delete("/api/v1/fleets/lab/").status_code == 204
    assert not Fleet.objects.exists()


def test_it_answers_409_to_deleting_a_fleet_with_devices(admin_api):
    device = DeviceFactory(fleet__slug="lab")
    response = admin_api.delete("/api/v1/fleets/lab/")
    assert response.status_code == 409
    assert response.json()["error"] == "fleet_not_empty"
    assert "lab" in response.json()["detail"]
    assert Fleet.objects.filter(pk=device.fleet_id).exists()


def test_it_answers_404_json_for_an_unknown_fleet(admin_api):
    response = admin_api.get("/api/v1/fleets/nope/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
