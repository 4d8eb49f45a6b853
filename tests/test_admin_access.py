"""Per-fleet access in the admin (CONTRACT section 10, "the admin applies the
same rules"): the stock admin pages and the console's alike filter their
lists to the member's fleets, answer 404 for another fleet's objects as for
missing ids, offer actions and buttons only with the operator (or admin)
role, and refuse a posted action without it (403, nothing written)."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from devices.models import Device, DeviceService, Fleet, ServiceHistory
from devices.services import ServiceChange, device_change_services
from rollouts.models import ImagePolicy, Rollout, RolloutDevice, RolloutEvent

from .access_world import ROLES, build_world, snapshot
from .factories import operator

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    made = build_world()
    # Members reach the admin as staff users (the admin's own gate).
    User.objects.update(is_staff=True)
    # A second version of each device, so a rollback has somewhere to go.
    for device in (made.device_berlin, made.device_tokyo):
        device_change_services(device_id=device.pk, changes={"web": ServiceChange(tag="v1.1")})
    return made


def browser(world, name: str) -> Client:
    client = Client()
    client.force_login(world.users[name])
    return client


# --- Lists ------------------------------------------------------------------

LISTS = [
    # (changelist, what a Berlin member sees)
    ("/admin/devices/fleet/", lambda w: {w.berlin.pk}),
    ("/admin/devices/device/", lambda w: {w.device_berlin.pk}),
    ("/admin/rollouts/imagepolicy/", lambda w: {w.policy_berlin.pk}),
    ("/admin/rollouts/rollout/", lambda w: {w.rollout_berlin.pk, w.rollout_both.pk}),
    (
        "/admin/rollouts/rolloutdevice/",
        lambda w: set(
            RolloutDevice.objects.filter(device=w.device_berlin).values_list("pk", flat=True)
        ),
    ),
    (
        "/admin/rollouts/rolloutevent/",
        # The rollout-level events of Berlin's rollouts, and the device events
        # of Berlin's device; not the Tokyo device's event in the spanning one.
        lambda w: set(
            RolloutEvent.objects.filter(rollout__in=[w.rollout_berlin, w.rollout_both])
            .exclude(device_uuid=w.device_tokyo.uuid)
            .values_list("pk", flat=True)
        ),
    ),
]


def listed(response) -> set:
    assert response.status_code == 200, response.content[:300]
    return {row.pk for row in response.context["cl"].result_list}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("url, expected", LISTS, ids=[row[0] for row in LISTS])
def test_it_filters_every_admin_list_to_the_members_fleets(world, role, url, expected):
    assert listed(browser(world, role).get(url)) == expected(world)


def test_a_member_of_another_fleet_sees_none_of_berlin_in_the_admin(world):
    client = browser(world, "outsider")
    assert listed(client.get("/admin/devices/device/")) == {world.device_tokyo.pk}
    assert listed(client.get("/admin/rollouts/rollout/")) == {world.rollout_tokyo.pk, world.rollout_both.pk}
    assert listed(client.get("/admin/devices/fleet/")) == {world.tokyo.pk}


def test_the_fleet_filter_offers_only_the_members_fleets(world):
    osaka = Fleet.objects.create(slug="osaka", name="Osaka", provisioning_key_hash="o" * 64)
    html = browser(world, "operator_both").get("/admin/devices/device/").content.decode()
    assert "?fleet__id__exact=%d" % world.berlin.pk in html
    assert "?fleet__id__exact=%d" % world.tokyo.pk in html
    assert "?fleet__id__exact=%d" % osaka.pk not in html
    assert osaka.name not in html


@pytest.mark.parametrize("url", [row[0] for row in LISTS])
def test_it_refuses_the_admin_to_a_staff_user_with_neither_membership_nor_permission(world, url):
    assert browser(world, "stranger").get(url).status_code == 403


def test_global_model_permissions_still_see_every_fleet_in_the_admin(world):
    user, _ = operator("devices.view_device", username="global")
    User.objects.filter(pk=user.pk).update(is_staff=True)
    client = Client()
    client.force_login(user)
    assert listed(client.get("/admin/devices/device/")) == {world.device_berlin.pk, world.device_tokyo.pk}


# --- Another fleet's objects: 404, as a missing id ---------------------------

MISSING = 999999
MISSING_UUID = "00000000-0000-4000-8000-000000000000"


def _outside(world) -> list[tuple[str, object, object]]:
    """(url template, a Tokyo object's id, a missing id)."""
    device_row = RolloutDevice.objects.get(rollout=world.rollout_tokyo)
    event = RolloutEvent.objects.filter(rollout=world.rollout_tokyo).first()
    pages = [
        ("/admin/devices/fleet/{}/change/", world.tokyo.pk, MISSING),
        ("/admin/devices/fleet/{}/history/", world.tokyo.pk, MISSING),
        ("/admin/devices/device/{}/change/", world.device_tokyo.pk, MISSING),
        ("/admin/devices/device/{}/delete/", world.device_tokyo.pk, MISSING),
        ("/admin/devices/device/{}/history/", world.device_tokyo.pk, MISSING),
        ("/admin/devices/device/{}/act/rollback/", world.device_tokyo.pk, MISSING),
        ("/admin/devices/device/{}/act/pin/?service=web", world.device_tokyo.pk, MISSING),
        ("/admin/rollouts/imagepolicy/{}/change/", world.policy_tokyo.pk, MISSING),
        ("/admin/rollouts/imagepolicy/{}/change/", world.policy_global.pk, MISSING),
        ("/admin/rollouts/imagepolicy/{}/delete/", world.policy_tokyo.pk, MISSING),
        ("/admin/rollouts/rollout/{}/change/", world.rollout_tokyo.pk, MISSING_UUID),
        ("/admin/rollouts/rollout/{}/act/pause/", world.rollout_tokyo.pk, MISSING_UUID),
        ("/admin/rollouts/rolloutdevice/{}/change/", device_row.pk, MISSING),
        ("/admin/rollouts/rolloutevent/{}/change/", event.pk, MISSING),
    ]
    return pages


@pytest.mark.parametrize("role", ROLES)
def test_it_answers_404_for_another_fleets_objects_like_for_missing_ids(world, role):
    client = browser(world, role)
    before = snapshot()
    for template, outside_id, missing_id in _outside(world):
        for method in ("get", "post"):
            outside = getattr(client, method)(template.format(outside_id))
            missing = getattr(client, method)(template.format(missing_id))
            # A write the role could not do in any fleet is refused (403)
            # before the object is looked up: alike for both, no id leaks.
            writes = method == "post" or "/delete/" in template
            expected = {403, 404} if writes else {404}
            assert outside.status_code == missing.status_code, (method, template)
            assert outside.status_code in expected, (method, template, outside.status_code)
            assert outside.json()["error"] == missing.json()["error"]
            assert outside.json()["detail"].replace(str(outside_id), "<id>") == missing.json()[
                "detail"
            ].replace(str(missing_id), "<id>"), template
    assert snapshot() == before


# --- Buttons and actions need the role --------------------------------------


def _actions_offered(response) -> set[str]:
    form = response.context["action_form"]
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def test_a_viewer_is_offered_no_action_and_no_button(world):
    client = browser(world, "viewer")
    for url in ("/admin/devices/device/", "/admin/rollouts/rollout/", "/admin/rollouts/imagepolicy/",
                "/admin/devices/fleet/"):
        assert _actions_offered(client.get(url)) == set(), url
    device_page = client.get(f"/admin/devices/device/{world.device_berlin.pk}/change/").content.decode()
    assert "data-device-action" not in device_page
    assert 'name="_save"' not in device_page
    assert "/delete/" not in device_page
    policy_page = client.get(f"/admin/rollouts/imagepolicy/{world.policy_berlin.pk}/change/").content.decode()
    assert 'name="_save"' not in policy_page
    rollout_page = client.get(f"/admin/rollouts/rollout/{world.rollout_berlin.pk}/change/").content.decode()
    assert "data-action=" not in rollout_page


POSTED_ACTIONS = [
    ("/admin/rollouts/rollout/", "pause", lambda w: w.rollout_berlin.pk),
    ("/admin/rollouts/rollout/", "cancel", lambda w: w.rollout_berlin.pk),
    ("/admin/devices/device/", "roll_back", lambda w: w.device_berlin.pk),
    ("/admin/devices/device/", "delete_selected", lambda w: w.device_berlin.pk),
    ("/admin/rollouts/imagepolicy/", "delete_selected", lambda w: w.policy_berlin.pk),
]


@pytest.mark.parametrize("url, action, pk", POSTED_ACTIONS, ids=[f"{row[0]}{row[1]}" for row in POSTED_ACTIONS])
def test_a_viewer_posting_an_action_gets_403_and_nothing_is_written(world, url, action, pk):
    before = snapshot()
    body = {"action": action, "_selected_action": [str(pk(world))], "post": "yes"}
    assert browser(world, "viewer").post(url, body).status_code == 403
    assert snapshot() == before


def test_a_viewer_pressing_a_device_button_gets_403(world):
    before = snapshot()
    device = world.device_berlin.pk
    client = browser(world, "viewer")
    for name, service in [("rollback", ""), ("rollback", "web"), ("pin", "web")]:
        assert client.get(f"/admin/devices/device/{device}/act/{name}/?service={service}").status_code == 403
        assert client.post(f"/admin/devices/device/{device}/act/{name}/", {"service": service}).status_code == 403
    assert client.post(f"/admin/devices/device/{device}/change/", {"name": "renamed"}).status_code == 403
    assert snapshot() == before


def test_an_operator_is_offered_the_actions_of_their_role_only(world):
    client = browser(world, "operator")
    assert _actions_offered(client.get("/admin/rollouts/rollout/")) == {
        "pause", "resume", "cancel", "rollback_all", "start", "approve", "reject"
    }
    # Deleting devices is a fleet admin's.
    assert _actions_offered(client.get("/admin/devices/device/")) == {"roll_back"}
    assert _actions_offered(browser(world, "admin").get("/admin/devices/device/")) == {
        "roll_back", "delete_selected"
    }


def test_an_operator_pauses_a_rollout_of_their_fleet_from_the_admin(world):
    body = {"action": "pause", "_selected_action": [str(world.rollout_berlin.pk)]}
    assert browser(world, "operator").post("/admin/rollouts/rollout/", body).status_code == 302
    assert Rollout.objects.get(pk=world.rollout_berlin.pk).status == "paused"


def test_an_operator_cannot_act_on_another_fleets_rollout_from_the_admin(world):
    before = snapshot()
    body = {"action": "pause", "_selected_action": [str(world.rollout_tokyo.pk)]}
    # Invisible: Django finds no selected row and changes nothing.
    assert browser(world, "operator").post("/admin/rollouts/rollout/", body).status_code == 302
    assert snapshot() == before


def test_an_operator_rolls_back_a_device_of_their_fleet_only(world):
    client = browser(world, "operator")
    page = client.get(f"/admin/devices/device/{world.device_berlin.pk}/change/").content.decode()
    assert 'data-device-action="rollback"' in page
    # The device's own fields are a fleet admin's: shown read-only.
    assert 'name="_save"' not in page
    url = f"/admin/devices/device/{world.device_berlin.pk}/act/rollback/"
    assert client.post(url, {"service": "web"}).status_code == 302
    assert DeviceService.objects.get(device=world.device_berlin).target_tag == "v1"
    assert ServiceHistory.objects.filter(device=world.device_berlin).latest("id").source == "rollback"
    before = snapshot()
    hidden = client.post(f"/admin/devices/device/{world.device_tokyo.pk}/act/rollback/", {"service": "web"})
    assert hidden.status_code == 404
    both = {"action": "roll_back", "_selected_action": [str(world.device_tokyo.pk)]}
    client.post("/admin/devices/device/", both)
    assert snapshot() == before


def test_a_fleet_admin_renames_a_device_and_an_operator_may_not(world):
    url = f"/admin/devices/device/{world.device_berlin.pk}/change/"
    form = {
        "name": "renamed", "fleet": world.berlin.pk,
        "tag_set-TOTAL_FORMS": "0", "tag_set-INITIAL_FORMS": "0",
        "history-TOTAL_FORMS": "0", "history-INITIAL_FORMS": "0",
    }
    assert browser(world, "operator").post(url, form).status_code == 403
    assert browser(world, "admin").post(url, {**form, "fleet": world.tokyo.pk}).status_code == 200  # not a choice
    assert Device.objects.get(pk=world.device_berlin.pk).fleet_id == world.berlin.pk
    assert browser(world, "admin").post(url, form).status_code == 302
    assert Device.objects.get(pk=world.device_berlin.pk).name == "renamed"


def test_an_operator_edits_the_policies_of_their_fleet_only(world):
    client = browser(world, "operator")
    page = client.get("/admin/rollouts/imagepolicy/add/")
    choices = {str(value) for value, _ in page.context["adminform"].form.fields["fleet"].choices if value}
    assert choices == {str(world.berlin.pk)}
    form = {**form_defaults(page), "image_pattern": "acme/*", "fleet": ""}
    before = ImagePolicy.objects.count()
    # A policy for all fleets (no fleet) needs the model permission.
    assert client.post("/admin/rollouts/imagepolicy/add/", form).status_code == 200
    assert ImagePolicy.objects.count() == before
    assert client.post("/admin/rollouts/imagepolicy/add/", {**form, "fleet": world.berlin.pk}).status_code == 302
    assert ImagePolicy.objects.filter(fleet=world.berlin).count() == 2
    assert browser(world, "viewer").post("/admin/rollouts/imagepolicy/add/", {**form, "fleet": world.berlin.pk}).status_code == 403


def test_only_a_fleet_admin_renames_the_fleet_in_the_admin(world):
    url = f"/admin/devices/fleet/{world.berlin.pk}/change/"
    form = {"slug": "berlin", "name": "Berlin HQ"}
    assert browser(world, "operator").post(url, form).status_code == 403
    assert browser(world, "admin").post(url, form).status_code == 302
    assert Fleet.objects.get(pk=world.berlin.pk).name == "Berlin HQ"
    # Deleting a fleet needs the model permission, as in the API.
    assert browser(world, "admin").post(f"{url.removesuffix('change/')}delete/", {"post": "yes"}).status_code == 403


def form_defaults(page) -> dict:
    """The values an unchanged admin form posts (fields other issues add to
    the model included)."""
    form = page.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        if value is not None:
            data[name] = value
    return data


# --- A rollout spanning two fleets ------------------------------------------


@pytest.mark.parametrize("user", ["viewer", "operator", "outsider"])
def test_a_spanning_rollout_is_visible_to_members_of_either_fleet_in_the_admin(world, user):
    client = browser(world, user)
    assert world.rollout_both.pk in listed(client.get("/admin/rollouts/rollout/"))
    assert client.get(f"/admin/rollouts/rollout/{world.rollout_both.pk}/change/").status_code == 200


@pytest.mark.parametrize("user", ["operator", "admin", "outsider"])
def test_a_spanning_rollout_is_steered_only_by_operators_of_both_fleets(world, user):
    client = browser(world, user)
    page = client.get(f"/admin/rollouts/rollout/{world.rollout_both.pk}/change/").content.decode()
    assert "data-action=" not in page
    before = snapshot()
    body = {"action": "pause", "_selected_action": [str(world.rollout_both.pk)]}
    assert client.post("/admin/rollouts/rollout/", body).status_code == 403
    # Selected beside one the operator may steer: still 403, nothing done.
    if user != "outsider":
        mixed = {"action": "pause", "_selected_action": [str(world.rollout_berlin.pk), str(world.rollout_both.pk)]}
        assert client.post("/admin/rollouts/rollout/", mixed).status_code == 403
    assert client.post(f"/admin/rollouts/rollout/{world.rollout_both.pk}/act/pause/").status_code == 403
    assert snapshot() == before


def test_an_operator_of_both_fleets_steers_the_spanning_rollout(world):
    client = browser(world, "operator_both")
    page = client.get(f"/admin/rollouts/rollout/{world.rollout_both.pk}/change/").content.decode()
    assert set(re.findall(r'data-action="([a-z_]+)"', page)) == {"pause", "cancel", "rollback_all", "retry"}
    body = {"action": "pause", "_selected_action": [str(world.rollout_both.pk)]}
    assert client.post("/admin/rollouts/rollout/", body).status_code == 302
    assert Rollout.objects.get(pk=world.rollout_both.pk).status == "paused"


def test_the_index_shows_a_member_the_apps_of_their_fleets(world):
    html = browser(world, "viewer").get("/admin/").content.decode()
    assert "/admin/devices/device/" in html and "/admin/rollouts/rollout/" in html
    # Global-only models stay hidden.
    assert "/admin/webhooks/" not in html and "/admin/auth/" not in html


def test_the_console_inventory_shows_a_member_the_images_of_their_fleets_only(world):
    html = browser(world, "viewer").get("/admin/images/").content.decode()
    assert 'data-image="docker.io/iotistic/myapp"' in html
    assert "docker.io/tokyo/app" not in html
    assert browser(world, "viewer").get("/admin/images/docker.io/tokyo/app/").status_code == 404
    fleet_page = browser(world, "viewer").get(f"/admin/devices/fleet/{world.berlin.pk}/change/").content.decode()
    assert "docker.io/tokyo/app" not in fleet_page


def test_a_fleet_admin_deletes_a_device_of_their_fleet_from_the_admin(world):
    body = {"action": "delete_selected", "_selected_action": [str(world.device_berlin.pk)], "post": "yes"}
    assert browser(world, "operator").post("/admin/devices/device/", body).status_code == 403
    assert browser(world, "admin").post("/admin/devices/device/", body).status_code == 302
    assert not Device.objects.filter(pk=world.device_berlin.pk).exists()
    assert Device.objects.filter(pk=world.device_tokyo.pk).exists()


def test_the_console_page_of_a_spanning_rollout_shows_a_member_their_own_devices_only(world):
    response = browser(world, "viewer").get(f"/admin/rollouts/rollout/{world.rollout_both.pk}/change/")
    assert [row.device_id for row in response.context["devices"]] == [world.device_berlin.pk]
    shown = {event.pk for event in response.context["events"]}
    tokyo = RolloutEvent.objects.get(rollout=world.rollout_both, device_uuid=world.device_tokyo.uuid)
    assert tokyo.pk not in shown and len(shown) == 2
    assert str(world.device_tokyo.uuid) not in response.content.decode()


def test_members_read_the_memberships_of_their_fleets_in_the_admin_and_change_none(world):
    from devices.models import FleetMembership

    client = browser(world, "viewer")
    response = client.get("/admin/devices/fleetmembership/")
    assert {FleetMembership.objects.get(pk=pk).fleet_id for pk in listed(response)} == {world.berlin.pk}
    assert "/admin/devices/fleetmembership/add/" not in response.content.decode()
    before = snapshot()
    assert client.post("/admin/devices/fleetmembership/add/", {"role": "admin"}).status_code == 403
    assert snapshot() == before


def test_only_fleet_admins_read_the_audit_trail_in_the_admin(world):
    from devices.models import FleetAuditEvent
    from devices.services import fleet_rotate_key

    for fleet in (world.berlin, world.tokyo):
        fleet_rotate_key(fleet=fleet, actor="someone")
    assert browser(world, "operator").get("/admin/devices/fleetauditevent/").status_code == 403
    seen = listed(browser(world, "admin").get("/admin/devices/fleetauditevent/"))
    assert {FleetAuditEvent.objects.get(pk=pk).fleet_id for pk in seen} == {world.berlin.pk}


def test_nobody_changes_memberships_in_the_admin_bypassing_the_audit(world):
    User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(User.objects.get(username="root"))
    assert client.get("/admin/devices/fleetmembership/").status_code == 200
    assert client.get("/admin/devices/fleetmembership/add/").status_code == 403


# --- The role before the form -------------------------------------------------

# Bodies no admin form accepts: a user without the role must get 403 for them
# (never the form back with its errors, which teach the form's shape); a user
# with the role gets the form back (200) with its errors.
INVALID_FORM = {"image_pattern": "", "batch_percentages": "garbage", "name": "", "slug": "!!", "url": "ftp://x"}

FORM_PAGES = [
    # (page, the berlin role that may write it; None: model permissions only)
    ("/admin/rollouts/imagepolicy/add/", "operator"),
    ("/admin/rollouts/imagepolicy/{policy}/change/", "operator"),
    ("/admin/rollouts/imagepolicy/{policy}/change/?_saveasnew=1", "operator"),
    ("/admin/devices/device/{device}/change/", "admin"),
    ("/admin/devices/fleet/{fleet}/change/", "admin"),
    ("/admin/notifications/notificationhook/add/", None),
    ("/admin/notifications/notificationhook/{hook}/change/", None),
]


def _may(role: str, needed: str | None) -> bool:
    return needed is not None and ROLES.index(role) >= ROLES.index(needed)


@pytest.mark.parametrize("role", ROLES)
def test_an_invalid_admin_form_is_refused_before_it_is_validated_without_the_role(world, role):
    from notifications.models import NotificationHook

    hook = NotificationHook.objects.create(url="https://hooks.example.com/fleet")
    client = browser(world, role)
    before = snapshot()
    for page, needed in FORM_PAGES:
        url = page.format(
            policy=world.policy_berlin.pk, device=world.device_berlin.pk, fleet=world.berlin.pk, hook=hook.pk
        )
        response = client.post(url, INVALID_FORM)
        if _may(role, needed):
            assert response.status_code == 200, url
            assert response.context_data["errors"], url
        else:
            assert response.status_code == 403, url
    assert snapshot() == before


# An action name the user is not offered, whether another model's or one no
# model has: 403 for every role, with or without selected rows.
UNOFFERED_ACTIONS = [
    ("/admin/devices/device/", "pause", lambda w: w.device_berlin.pk),
    ("/admin/rollouts/imagepolicy/", "roll_back", lambda w: w.policy_berlin.pk),
    ("/admin/rollouts/rollout/", "no_such_action", lambda w: w.rollout_berlin.pk),
    ("/admin/devices/fleet/", "delete_everything", lambda w: w.berlin.pk),
]


@pytest.mark.parametrize("role", ROLES)
def test_an_action_the_user_is_not_offered_is_refused_before_the_selection_is_read(world, role):
    client = browser(world, role)
    before = snapshot()
    for url, action, pk in UNOFFERED_ACTIONS:
        for selected in ([], [str(pk(world))]):
            response = client.post(url, {"action": action, "_selected_action": selected})
            assert response.status_code == 403, (url, action, selected)
    assert snapshot() == before
