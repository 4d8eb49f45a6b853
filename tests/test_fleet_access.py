"""Per-fleet access across the API (CONTRACT section 10): for every role and
for a user without membership, lists are filtered, objects outside answer
the same 404 as a missing id, and writes the role lacks answer 403 and write
nothing. Endpoints of other issues join the tables below as they land."""

import uuid

import pytest
from django.db import transaction

from devices.models import Role
from devices.services import ServiceChange, device_change_services

from .access_world import IMAGE, ROLES, build_world, snapshot

pytestmark = pytest.mark.django_db

MISSING_UUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def world():
    made = build_world()
    # A second version, so Berlin's device has one to roll back to.
    device_change_services(device_id=made.device_berlin.pk, changes={"web": ServiceChange(tag="v1.1")})
    return made


def ids(response, key):
    assert response.status_code == 200, response.content
    return {str(row[key]) for row in response.json()["results"]}


# --- Lists are filtered -----------------------------------------------------

LISTS = [
    # (url, key of a row, what a Berlin member sees)
    ("/api/v1/fleets/", "slug", lambda w: {"berlin"}),
    ("/api/v1/devices/", "uuid", lambda w: {str(w.device_berlin.uuid)}),
    ("/api/v1/image-policies/", "id", lambda w: {str(w.policy_berlin.pk)}),
    (
        "/api/v1/rollouts/",
        "id",
        lambda w: {str(w.rollout_berlin.pk), str(w.rollout_both.pk)},
    ),
    ("/api/v1/images/", "image", lambda w: {IMAGE}),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url, key, expected", LISTS, ids=[row[0] for row in LISTS])
def test_it_filters_every_list_to_the_members_fleets(world, role, url, key, expected):
    assert ids(world.client(role).get(url), key) == expected(world)


@pytest.mark.parametrize("url, key, expected", LISTS, ids=[row[0] for row in LISTS])
def test_it_shows_nothing_of_a_fleet_to_a_member_of_another(world, url, key, expected):
    seen = ids(world.client("outsider").get(url), key)
    assert not seen & expected(world) - {str(world.rollout_both.pk)}
    assert seen  # the outsider does see Tokyo


@pytest.mark.parametrize("url", [row[0] for row in LISTS])
def test_it_refuses_a_user_with_neither_membership_nor_permission(world, url):
    response = world.client("stranger").get(url)
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


def test_it_lists_only_the_members_devices_and_events_of_a_rollout(world):
    client = world.client("viewer")
    url = f"/api/v1/rollouts/{world.rollout_both.pk}"
    assert ids(client.get(f"{url}/devices/"), "device_uuid") == {str(world.device_berlin.uuid)}
    events = client.get(f"{url}/events/").json()["results"]
    assert {event["device_uuid"] for event in events} == {None, str(world.device_berlin.uuid)}


# --- Objects outside: the same 404 as a missing id ---------------------------

OUTSIDE = [
    # (method, url of a Tokyo object, the same url with a missing id, body)
    ("get", "/api/v1/fleets/{tokyo}/", "/api/v1/fleets/nowhere/", None),
    ("patch", "/api/v1/fleets/{tokyo}/", "/api/v1/fleets/nowhere/", {"name": "x"}),
    ("post", "/api/v1/fleets/{tokyo}/rotate-key", "/api/v1/fleets/nowhere/rotate-key", {}),
    ("get", "/api/v1/fleets/{tokyo}/members/", "/api/v1/fleets/nowhere/members/", None),
    (
        "post",
        "/api/v1/fleets/{tokyo}/members/",
        "/api/v1/fleets/nowhere/members/",
        {"username": "stranger", "role": "viewer"},
    ),
    (
        "patch",
        "/api/v1/fleets/{tokyo}/members/tokyo-admin/",
        "/api/v1/fleets/nowhere/members/tokyo-admin/",
        {"role": "viewer"},
    ),
    ("delete", "/api/v1/fleets/{tokyo}/members/tokyo-admin/", "/api/v1/fleets/nowhere/members/tokyo-admin/", None),
    ("get", "/api/v1/fleets/{tokyo}/audit/", "/api/v1/fleets/nowhere/audit/", None),
    ("get", "/api/v1/devices/{device}/", "/api/v1/devices/{missing}/", None),
    ("patch", "/api/v1/devices/{device}/", "/api/v1/devices/{missing}/", {"name": "x"}),
    ("delete", "/api/v1/devices/{device}/", "/api/v1/devices/{missing}/", None),
    ("get", "/api/v1/devices/{device}/history/", "/api/v1/devices/{missing}/history/", None),
    ("post", "/api/v1/devices/{device}/rollback", "/api/v1/devices/{missing}/rollback", {}),
    (
        "patch",
        "/api/v1/devices/{device}/",
        "/api/v1/devices/{missing}/",
        {"services": {"web": {"tag": "v1-hotfix", "pinned": True}}},
    ),
    ("get", "/api/v1/image-policies/{policy}/", "/api/v1/image-policies/999999/", None),
    ("patch", "/api/v1/image-policies/{policy}/", "/api/v1/image-policies/999999/", {"enabled": False}),
    ("delete", "/api/v1/image-policies/{policy}/", "/api/v1/image-policies/999999/", None),
    ("get", "/api/v1/image-policies/{global_policy}/", "/api/v1/image-policies/999999/", None),
    ("get", "/api/v1/rollouts/{rollout}/", "/api/v1/rollouts/{missing}/", None),
    ("get", "/api/v1/rollouts/{rollout}/devices/", "/api/v1/rollouts/{missing}/devices/", None),
    ("get", "/api/v1/rollouts/{rollout}/events/", "/api/v1/rollouts/{missing}/events/", None),
    ("get", "/api/v1/rollouts/{rollout}/stream", "/api/v1/rollouts/{missing}/stream", None),
    *[
        ("post", f"/api/v1/rollouts/{{rollout}}/{verb}", f"/api/v1/rollouts/{{missing}}/{verb}", {})
        for verb in ["start", "pause", "resume", "cancel", "rollback-all", "approve", "reject", "retry"]
    ],
]


def _urls(world, template):
    return template.format(
        tokyo="tokyo",
        device=world.device_tokyo.uuid,
        policy=world.policy_tokyo.pk,
        global_policy=world.policy_global.pk,
        rollout=world.rollout_tokyo.pk,
        missing=MISSING_UUID,
    )


@pytest.mark.parametrize("role", ROLES)
def test_it_answers_404_like_a_missing_id_outside_the_members_fleets(world, role):
    client = world.client(role)
    before = snapshot()
    for method, url, missing_url, body in OUTSIDE:
        outside = getattr(client, method)(_urls(world, url), body, format="json")
        missing = getattr(client, method)(_urls(world, missing_url), body, format="json")
        assert outside.status_code == 404, (method, url, outside.content)
        assert missing.status_code == 404, (method, missing_url)
        assert outside.json() == missing.json(), (method, url)
    assert snapshot() == before


# --- Writes need the role: 403 and nothing written ---------------------------

WRITES = [
    # (name, minimal role, method, url, body); None: model permissions only.
    ("rename fleet", "admin", "patch", "/api/v1/fleets/berlin/", {"name": "Berlin 2"}),
    ("rotate key", "admin", "post", "/api/v1/fleets/berlin/rotate-key", {}),
    ("read audit", "admin", "get", "/api/v1/fleets/berlin/audit/", None),
    ("add member", "admin", "post", "/api/v1/fleets/berlin/members/", {"username": "stranger", "role": "viewer"}),
    ("change member", "admin", "patch", "/api/v1/fleets/berlin/members/berlin-viewer/", {"role": "operator"}),
    ("remove member", "admin", "delete", "/api/v1/fleets/berlin/members/berlin-viewer/", None),
    ("create device", "admin", "post", "/api/v1/devices/", {"name": "new", "fleet": "berlin"}),
    ("rename device", "admin", "patch", "/api/v1/devices/{device}/", {"name": "renamed"}),
    ("delete device", "admin", "delete", "/api/v1/devices/{device}/", None),
    (
        "deploy",
        "operator",
        "patch",
        "/api/v1/devices/{device}/",
        {"services": {"web": {"image": IMAGE, "tag": "v9"}}},
    ),
    ("read history", "viewer", "get", "/api/v1/devices/{device}/history/", None),
    ("roll back", "operator", "post", "/api/v1/devices/{device}/rollback", {}),
    ("pin", "operator", "patch", "/api/v1/devices/{device}/", {"services": {"web": {"tag": "v1-hotfix", "pinned": True}}}),
    ("create policy", "operator", "post", "/api/v1/image-policies/", {"image_pattern": "acme/*", "fleet": "berlin"}),
    ("change policy", "operator", "patch", "/api/v1/image-policies/{policy}/", {"enabled": False}),
    ("delete policy", "operator", "delete", "/api/v1/image-policies/{policy}/", None),
    ("trigger rollout", "operator", "post", "/api/v1/rollouts/", {"image": IMAGE, "tag": "v7", "policy": "{policy}"}),
    ("pause", "operator", "post", "/api/v1/rollouts/{rollout}/pause", {}),
    ("cancel", "operator", "post", "/api/v1/rollouts/{rollout}/cancel", {}),
    ("rollback all", "operator", "post", "/api/v1/rollouts/{rollout}/rollback-all", {}),
    ("retry", "operator", "post", "/api/v1/rollouts/{rollout}/retry", {}),
    ("create fleet", None, "post", "/api/v1/fleets/", {"name": "New", "slug": "new"}),
    ("delete fleet", None, "delete", "/api/v1/fleets/berlin/", None),
    ("create global policy", None, "post", "/api/v1/image-policies/", {"image_pattern": "acme/*"}),
    ("move policy to all fleets", None, "patch", "/api/v1/image-policies/{policy}/", {"fleet": None}),
]


def _fill(world, value):
    if value == "{policy}":
        return world.policy_berlin.pk  # an id in a body is a JSON number
    if isinstance(value, str):
        return value.format(
            device=world.device_berlin.uuid, policy=world.policy_berlin.pk, rollout=world.rollout_berlin.pk
        )
    if isinstance(value, dict):
        return {key: _fill(world, item) for key, item in value.items()}
    return value


def _allowed(role: str, needed: str | None) -> bool:
    order = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
    return needed is not None and order.index(role) >= order.index(needed)


@pytest.mark.parametrize("role", ROLES)
def test_it_refuses_every_write_the_role_lacks_and_writes_nothing(world, role):
    client = world.client(role)
    for name, needed, method, url, body in WRITES:
        # Each write in a savepoint rolled back after it: every row starts
        # from the same world without building it again.
        with transaction.atomic():
            before = snapshot()
            response = getattr(client, method)(_fill(world, url), _fill(world, body), format="json")
            if _allowed(role, needed):
                assert response.status_code < 300, (name, response.content)
                assert method == "get" or snapshot() != before, name
            else:
                assert response.status_code == 403, (name, response.content)
                assert response.json()["error"] == "permission_denied", name
                assert snapshot() == before, name
            transaction.set_rollback(True)


# The same writes with bodies that do not validate: the role is checked
# first, so a caller without it gets 403 whatever the body (never a 400 that
# teaches the body's shape); with the role, the 400.
BAD_BODY_WRITES = [
    ("create device", "admin", "post", "/api/v1/devices/", {"name": 12, "fleet": "berlin"}),
    ("rename device", "admin", "patch", "/api/v1/devices/{device}/", {"name": "x", "tags": "not-a-list"}),
    ("deploy", "operator", "patch", "/api/v1/devices/{device}/", {"services": {"web": {"image": 5}}}),
    ("roll back", "operator", "post", "/api/v1/devices/{device}/rollback", {"service": 5}),
    ("create policy", "operator", "post", "/api/v1/image-policies/", {"image_pattern": 5, "fleet": "berlin"}),
    ("change policy", "operator", "patch", "/api/v1/image-policies/{policy}/", {"enabled": "no"}),
    ("replace policy", "operator", "put", "/api/v1/image-policies/{policy}/", {"image_pattern": 5}),
    ("trigger rollout", "operator", "post", "/api/v1/rollouts/", {"image": 5, "tag": "v7"}),
    ("preview rollout", "operator", "post", "/api/v1/rollouts/preview", {"image": 5, "tag": "v7"}),
]


@pytest.mark.parametrize("role", ROLES)
def test_it_checks_the_role_before_the_body(world, role):
    client = world.client(role)
    before = snapshot()
    for name, needed, method, url, body in BAD_BODY_WRITES:
        response = getattr(client, method)(_fill(world, url), _fill(world, body), format="json")
        expected = (400, "invalid") if _allowed(role, needed) else (403, "permission_denied")
        assert (response.status_code, response.json()["error"]) == expected, (name, response.content)
    assert snapshot() == before


def test_it_refuses_to_create_a_device_in_a_fleet_the_admin_cannot_see_like_a_missing_one(world):
    client = world.client("admin")
    hidden = client.post("/api/v1/devices/", {"name": "x", "fleet": "tokyo"}, format="json")
    missing = client.post("/api/v1/devices/", {"name": "x", "fleet": "nowhere"}, format="json")
    assert hidden.status_code == missing.status_code == 400
    assert hidden.json()["fields"]["fleet"] == [
        message.replace("nowhere", "tokyo") for message in missing.json()["fields"]["fleet"]
    ]


def test_it_refuses_to_move_a_policy_into_a_fleet_the_operator_cannot_see(world):
    url = f"/api/v1/image-policies/{world.policy_berlin.pk}/"
    response = world.client("operator").patch(url, {"fleet": "tokyo"}, format="json")
    assert response.status_code == 400
    assert world.policy_berlin.__class__.objects.get(pk=world.policy_berlin.pk).fleet_id == world.berlin.pk


ACTIONS = ["start", "pause", "resume", "cancel", "rollback-all", "approve", "reject"]


@pytest.mark.parametrize("verb", ACTIONS)
def test_every_rollout_action_needs_the_operator_role(world, verb):
    """Whatever the status allows: a viewer gets 403 and nothing is written;
    an operator of the fleet gets past the check (200, or 409 when the
    status forbids the action)."""
    url = f"/api/v1/rollouts/{world.rollout_berlin.pk}/{verb}"
    before = snapshot()
    refused = world.client("viewer").post(url, {}, format="json")
    assert (refused.status_code, refused.json()["error"]) == (403, "permission_denied")
    assert snapshot() == before
    allowed = world.client("operator").post(url, {}, format="json")
    assert allowed.status_code in (200, 409), allowed.content


@pytest.mark.parametrize(
    "url", ["/api/v1/events/stream", "/api/v1/rollouts/{rollout}/stream", "/api/v1/images/"]
)
def test_streams_and_images_refuse_a_user_with_neither_membership_nor_permission(world, url):
    response = world.client("stranger").get(url.format(rollout=world.rollout_berlin.pk))
    assert (response.status_code, response.json()["error"]) == (403, "permission_denied")


# --- A rollout spanning two fleets -----------------------------------------


@pytest.mark.parametrize("user", ["viewer", "outsider"])
def test_it_shows_a_rollout_spanning_two_fleets_to_members_of_either(world, user):
    response = world.client(user).get(f"/api/v1/rollouts/{world.rollout_both.pk}/")
    assert response.status_code == 200
    assert response.json()["id"] == str(world.rollout_both.pk)


@pytest.mark.parametrize("user", ["operator", "admin", "outsider"])
def test_it_lets_only_operators_of_both_fleets_steer_a_spanning_rollout(world, user):
    url = f"/api/v1/rollouts/{world.rollout_both.pk}/pause"
    response = world.client(user).post(url, {}, format="json")
    assert response.status_code == 403
    world.rollout_both.refresh_from_db()
    assert world.rollout_both.status == "in_progress"


def test_it_lets_an_operator_of_both_fleets_steer_a_spanning_rollout(world):
    url = f"/api/v1/rollouts/{world.rollout_both.pk}/pause"
    response = world.client("operator_both").post(url, {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "paused"


def test_it_refuses_a_manual_trigger_through_a_policy_for_all_fleets(world):
    body = {"image": "docker.io/other/thing", "tag": "v1", "policy": world.policy_global.pk}
    response = world.client("admin").post("/api/v1/rollouts/", body, format="json")
    # The policy is invisible to a member: it does not exist for them.
    assert response.status_code == 400
    assert "policy" in response.json()["fields"]


def test_it_refuses_a_manual_trigger_whose_best_policy_covers_all_fleets(world):
    body = {"image": "docker.io/other/thing", "tag": "v1"}
    before = snapshot()
    response = world.client("admin").post("/api/v1/rollouts/", body, format="json")
    assert response.status_code == 403
    assert snapshot() == before


def test_global_model_permissions_still_reach_every_fleet(world, make_operator):
    client = make_operator("devices.view_device")
    seen = ids(client.get("/api/v1/devices/"), "uuid")
    assert seen == {str(world.device_berlin.uuid), str(world.device_tokyo.uuid)}


def test_it_treats_a_malformed_uuid_outside_like_a_missing_one(world):
    client = world.client("viewer")
    assert client.get(f"/api/v1/devices/{uuid.uuid4()}/").json() == client.get(
        f"/api/v1/devices/{world.device_tokyo.uuid}/"
    ).json()
