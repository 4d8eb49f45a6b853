"""Risk and approval (CONTRACT section 7): a rollout riskier than its policy's
`auto_approve_max_risk` waits in `awaiting_approval`, touching no device,
until an operator approves or rejects it."""

import pytest
from console.actions import allowed_actions
from rollouts.models import Rollout
from rollouts.services import rollout_create_for_push, rollout_fan_out

from .factories import operator
from .rollout_helpers import (
    IMAGE,
    T0,
    build_fleet,
    event_counts,
    minutes,
    policy,
    target_tags,
    target_versions,
    tick,
)

pytestmark = pytest.mark.django_db


def pushed(tag: str) -> Rollout:
    outcome = rollout_create_for_push(image=IMAGE, tag=tag, digest=None, now=T0)
    assert outcome.status == "rollout_created", outcome
    rollout_fan_out(rollout_id=outcome.rollout.pk, now=T0)
    outcome.rollout.refresh_from_db()
    return outcome.rollout


@pytest.mark.parametrize(
    "running, tag, risk",
    [("2.0.0", "2.0.1", "low"), ("2.0.0", "2.1.0", "medium"), ("2.0.0", "3.0.0", "high")],
)
def test_a_rollout_carries_the_highest_risk_of_its_devices(running, tag, risk):
    build_fleet(3, tag=running)
    policy()
    assert pushed(tag).risk == risk


@pytest.mark.parametrize(
    "running, tag, rules",
    [
        ("2.0.0", "2.1.0-rc.1", {"include_prereleases": True}),
        ("2.1.0", "2.0.0", {"allow_downgrade": True}),
        ("latest", "2.0.0", {}),
        ("2.0.0", "stable", {}),
    ],
)
def test_prereleases_downgrades_and_tags_that_are_no_version_are_high_risk(running, tag, rules):
    build_fleet(2, tag=running)
    policy(auto_approve_max_risk="medium", **rules)
    rollout = pushed(tag)
    assert (rollout.risk, rollout.status) == ("high", "awaiting_approval")


def test_the_riskiest_device_sets_the_rollouts_risk():
    fleet = build_fleet(3, tag="2.0.0")
    build_fleet(1, fleet=fleet, tag="1.9.0")
    policy()
    assert pushed("2.0.1").risk == "high"


@pytest.mark.parametrize(
    "max_risk, tag, waits",
    [
        ("high", "3.0.0", False),
        ("medium", "3.0.0", True),
        ("medium", "2.1.0", False),
        ("low", "2.1.0", True),
        ("low", "2.0.1", False),
        ("none", "2.0.1", True),
    ],
)
def test_a_rollout_riskier_than_the_policy_allows_waits_for_approval(max_risk, tag, waits):
    build_fleet(4, tag="2.0.0")
    policy(auto_approve_max_risk=max_risk, update_strategy="auto")
    rollout = pushed(tag)
    assert (rollout.status == "awaiting_approval") is waits
    assert (rollout.status == "in_progress") is (not waits)


def test_awaiting_approval_changes_no_device_target_until_approved(admin_api):
    build_fleet(5, tag="2.0.0")
    policy(auto_approve_max_risk="low", update_strategy="auto")
    rollout = pushed("3.0.0")
    assert rollout.status == "awaiting_approval"
    assert event_counts(rollout)["rollout_awaiting_approval"] == 1
    tick(T0 + minutes(5))
    assert target_tags() == {"2.0.0": 5}
    assert target_versions() == {1: 5}
    response = admin_api.post(f"/api/v1/rollouts/{rollout.pk}/approve")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["approved_by"], body["risk"]) == ("in_progress", "root", "high")
    assert body["approved_at"]
    assert target_tags() == {"3.0.0": 5}
    assert event_counts(Rollout.objects.get(pk=rollout.pk))["rollout_approved"] == 1


def test_a_rollout_nobody_had_to_approve_shows_approved_by_null(admin_api):
    build_fleet(2, tag="2.0.0")
    policy()
    rollout = pushed("2.0.1")
    body = admin_api.get(f"/api/v1/rollouts/{rollout.pk}/").json()
    assert (body["risk"], body["approved_by"], body["approved_at"]) == ("low", None, None)


def test_approving_a_manual_rollout_leaves_it_pending_for_start(admin_api):
    build_fleet(2, tag="2.0.0")
    policy(auto_approve_max_risk="none", update_strategy="manual")
    rollout = pushed("2.0.1")
    assert rollout.status == "awaiting_approval"
    assert admin_api.post(f"/api/v1/rollouts/{rollout.pk}/approve").json()["status"] == "pending"
    assert target_tags() == {"2.0.0": 2}
    assert admin_api.post(f"/api/v1/rollouts/{rollout.pk}/start").json()["status"] == "in_progress"


def test_rejecting_ends_the_rollout_without_touching_a_device(admin_api):
    build_fleet(3, tag="2.0.0")
    policy(auto_approve_max_risk="none")
    rollout = pushed("2.0.1")
    body = admin_api.post(f"/api/v1/rollouts/{rollout.pk}/reject").json()
    assert (body["status"], body["counts"]["skipped"]) == ("rejected", 3)
    assert body["finished_at"]
    assert target_tags() == {"2.0.0": 3}
    assert event_counts(Rollout.objects.get(pk=rollout.pk))["rollout_rejected"] == 1


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_approve_and_reject_answer_409_from_any_other_status(admin_api, action):
    build_fleet(2, tag="2.0.0")
    policy()
    rollout = pushed("2.0.1")
    assert rollout.status == "in_progress"
    response = admin_api.post(f"/api/v1/rollouts/{rollout.pk}/{action}")
    assert response.status_code == 409
    assert response.json()["error"] == "invalid_transition"


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_approve_and_reject_need_change_rollout(make_operator, action):
    build_fleet(2, tag="2.0.0")
    policy(auto_approve_max_risk="none")
    rollout = pushed("2.0.1")
    viewer = make_operator("rollouts.view_rollout")
    response = viewer.post(f"/api/v1/rollouts/{rollout.pk}/{action}")
    assert response.status_code == 403
    assert response.json()["error"]
    assert Rollout.objects.get(pk=rollout.pk).status == "awaiting_approval"


def test_a_newer_push_supersedes_an_awaiting_rollout():
    build_fleet(3, tag="2.0.0")
    policy(auto_approve_max_risk="low")
    first = pushed("3.0.0")
    assert first.status == "awaiting_approval"
    second = pushed("2.0.1")
    first.refresh_from_db()
    assert (first.status, first.superseded_by_id) == ("superseded", second.pk)
    assert second.status == "in_progress"


def test_the_console_offers_approve_and_reject_to_who_may_steer():
    build_fleet(2, tag="2.0.0")
    policy(auto_approve_max_risk="none")
    rollout = pushed("2.0.1")
    steerer, _ = operator("rollouts.change_rollout", "rollouts.view_rollout", username="steerer")
    viewer, _ = operator("rollouts.view_rollout", username="viewer")
    assert [action.name for action in allowed_actions(rollout, steerer)] == ["approve", "reject"]
    assert allowed_actions(rollout, viewer) == []


def test_the_rollout_page_shows_approve_and_reject_buttons(client):
    build_fleet(2, tag="2.0.0")
    policy(auto_approve_max_risk="none")
    rollout = pushed("2.0.1")
    user, _ = operator("rollouts.change_rollout", "rollouts.view_rollout", username="staff")
    user.is_staff = True
    user.save()
    client.force_login(user)
    html = client.get(f"/admin/rollouts/rollout/{rollout.pk}/change/").content.decode()
    assert 'data-action="approve"' in html and 'data-action="reject"' in html
    assert f"/admin/rollouts/rollout/{rollout.pk}/act/approve/" in html
    assert 'data-action="pause"' not in html and 'data-action="start"' not in html
    client.post(f"/admin/rollouts/rollout/{rollout.pk}/act/approve/")
    assert Rollout.objects.get(pk=rollout.pk).approved_by == "staff"
