"""Members API, key rotation and the audit trail (CONTRACT section 10)."""

import pytest

from devices.models import FleetAuditEvent, FleetMembership

from .access_world import build_world

pytestmark = pytest.mark.django_db

MEMBERS = "/api/v1/fleets/berlin/members/"


@pytest.fixture
def world():
    return build_world()


def test_it_lists_the_members_of_a_fleet_to_any_member(world):
    response = world.client("viewer").get(MEMBERS)
    assert response.status_code == 200
    rows = {row["username"]: row["role"] for row in response.json()["results"]}
    assert rows == {
        "berlin-viewer": "viewer",
        "berlin-operator": "operator",
        "berlin-admin": "admin",
        "both-operator": "operator",
    }


def test_it_adds_a_member_and_records_who_did_it(world):
    response = world.client("admin").post(MEMBERS, {"username": "stranger", "role": "operator"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["username"] == "stranger"
    assert response.json()["role"] == "operator"
    assert FleetMembership.objects.get(user__username="stranger", fleet=world.berlin).role == "operator"
    event = FleetAuditEvent.objects.get(fleet=world.berlin)
    assert (event.action, event.actor, event.subject, event.data) == (
        "member.added", "berlin-admin", "stranger", {"role": "operator"}
    )


def test_a_new_member_sees_the_fleet_at_once(world):
    world.client("admin").post(MEMBERS, {"username": "stranger", "role": "viewer"}, format="json")
    response = world.client("stranger").get("/api/v1/fleets/")
    assert [row["slug"] for row in response.json()["results"]] == ["berlin"]


def test_it_changes_a_role_and_records_the_previous_one(world):
    url = f"{MEMBERS}berlin-viewer/"
    response = world.client("admin").patch(url, {"role": "admin"}, format="json")
    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    event = FleetAuditEvent.objects.get(action="member.role_changed")
    assert (event.actor, event.subject, event.data) == (
        "berlin-admin", "berlin-viewer", {"role": "admin", "previous_role": "viewer"}
    )


def test_an_empty_patch_changes_nothing_and_audits_nothing(world):
    response = world.client("admin").patch(f"{MEMBERS}berlin-viewer/", {}, format="json")
    assert response.status_code == 200
    assert response.json()["role"] == "viewer"
    assert not FleetAuditEvent.objects.filter(action="member.role_changed").exists()


def test_it_removes_a_member_who_then_sees_nothing(world):
    response = world.client("admin").delete(f"{MEMBERS}berlin-viewer")
    assert response.status_code == 204
    assert not FleetMembership.objects.filter(user__username="berlin-viewer").exists()
    assert FleetAuditEvent.objects.get(action="member.removed").subject == "berlin-viewer"
    assert world.client("viewer").get("/api/v1/fleets/").status_code == 403


@pytest.mark.parametrize(
    "body, field",
    [
        ({"username": "nobody", "role": "viewer"}, "username"),
        ({"username": "stranger", "role": "owner"}, "role"),
        ({"role": "viewer"}, "username"),
        ({"username": "stranger"}, "role"),
    ],
)
def test_it_rejects_a_bad_member_with_a_400(world, body, field):
    response = world.client("admin").post(MEMBERS, body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["fields"]
    assert not FleetAuditEvent.objects.exists()


def test_it_answers_409_to_a_member_added_twice(world):
    body = {"username": "berlin-viewer", "role": "admin"}
    response = world.client("admin").post(MEMBERS, body, format="json")
    assert response.status_code == 409
    assert response.json()["error"] == "member_exists"
    assert FleetMembership.objects.get(user__username="berlin-viewer").role == "viewer"


def test_it_answers_404_for_a_user_who_is_no_member(world):
    response = world.client("admin").patch(f"{MEMBERS}stranger/", {"role": "admin"}, format="json")
    assert response.status_code == 404


def test_global_users_manage_members_with_the_membership_permissions(world, make_operator):
    client = make_operator("devices.view_fleet", "devices.add_fleetmembership")
    response = client.post(MEMBERS, {"username": "stranger", "role": "viewer"}, format="json")
    assert response.status_code == 201
    assert FleetAuditEvent.objects.get().actor.startswith("operator-")


# --- Key rotation ---------------------------------------------------------


def register(api_client, key):
    return api_client.post(
        "/api/v1/device/register", {"name": "new"}, format="json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def test_a_rotated_key_stops_registering_at_once(world, api_client):
    old_key = world.berlin.provisioning_key
    assert register(api_client, old_key).status_code == 201
    response = world.client("admin").post("/api/v1/fleets/berlin/rotate-key")
    assert response.status_code == 200
    new_key = response.json()["provisioning_key"]
    assert len(new_key) >= 43 and new_key != old_key
    assert register(api_client, old_key).status_code == 401
    registered = register(api_client, new_key)
    assert registered.status_code == 201
    assert registered.json()["fleet"] == "berlin"


def test_a_rotated_key_is_shown_once_and_audited(world):
    world.client("admin").post("/api/v1/fleets/berlin/rotate-key/")
    detail = world.client("admin").get("/api/v1/fleets/berlin/").json()
    assert "provisioning_key" not in detail
    event = FleetAuditEvent.objects.get()
    assert (event.action, event.actor, event.fleet_slug) == ("fleet.key_rotated", "berlin-admin", "berlin")
    assert event.fleet.provisioning_key_hash not in str(event.data)


def test_it_lists_the_audit_trail_newest_first_to_fleet_admins(world):
    admin = world.client("admin")
    admin.post("/api/v1/fleets/berlin/rotate-key")
    admin.post(MEMBERS, {"username": "stranger", "role": "viewer"}, format="json")
    response = admin.get("/api/v1/fleets/berlin/audit/")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["action"] for row in rows] == ["member.added", "fleet.key_rotated"]
    assert {row["actor"] for row in rows} == {"berlin-admin"}
    assert rows[0]["fleet"] == "berlin"


def test_the_audit_trail_outlives_the_fleet(world, admin_api):
    admin_api.post("/api/v1/fleets/", {"name": "Gone", "slug": "gone"}, format="json")
    admin_api.post("/api/v1/fleets/gone/rotate-key")
    assert admin_api.delete("/api/v1/fleets/gone/").status_code == 204
    event = FleetAuditEvent.objects.get(fleet_slug="gone")
    assert event.fleet is None
    assert event.actor == "root"
