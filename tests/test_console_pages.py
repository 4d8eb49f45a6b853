"""The console's rollout pages over HTTP: content, actions, permissions, CSRF,
and a number of queries that does not grow with the fleet."""

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console.actions import ACTIONS
from devices.models import DeviceService, Fleet, FleetMembership
from rollouts import services
from rollouts.models import Rollout, RolloutDevice, RolloutStatus

from .console_data import PASSWORD, VIEWER_PERMISSIONS, member_of, rollout_in_progress, user_with

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def operator_client():
    return client_for(
        user_with("operator", *VIEWER_PERMISSIONS, "rollouts.change_rollout", "devices.change_device")
    )


@pytest.fixture
def viewer_client():
    return client_for(user_with("viewer", *VIEWER_PERMISSIONS))


@pytest.fixture
def rollout():
    return rollout_in_progress(20, timezone.now(), failed=1)


def page_url(rollout) -> str:
    return f"/admin/rollouts/rollout/{rollout.pk}/change/"


def act_url(rollout, name: str) -> str:
    return f"/admin/rollouts/rollout/{rollout.pk}/act/{name}/"


def csrf_token(client: Client, url: str) -> str:
    html = client.get(url).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def action_buttons(html: str) -> set[str]:
    return set(re.findall(r'data-action="([a-z_]+)"', html))


def test_it_shows_release_status_batches_devices_and_timeline(operator_client, rollout):
    html = operator_client.get(page_url(rollout)).content.decode()
    assert "iotistic/myapp:v2.0.0" in html
    assert 'class="c-pill c-in_progress"' in html
    assert "Batch 1 · up to 10 %" in html and "Batch 3 · up to 100 %" in html
    assert "batch started" in html
    assert "d0" in html
    assert "Internal fields" in html and "judged_since" in html


def test_it_offers_exactly_the_actions_the_status_allows(operator_client, rollout):
    assert action_buttons(operator_client.get(page_url(rollout)).content.decode()) == {
        "pause", "cancel", "rollback_all", "retry"
    }
    services.rollout_pause(rollout_id=rollout.pk, actor="t")
    assert action_buttons(operator_client.get(page_url(rollout)).content.decode()) == {
        "resume", "cancel", "rollback_all", "retry"
    }
    services.rollout_cancel(rollout_id=rollout.pk, actor="t")
    assert action_buttons(operator_client.get(page_url(rollout)).content.decode()) == {"rollback_all"}


def test_it_shows_a_viewer_no_action_buttons(viewer_client, rollout):
    response = viewer_client.get(page_url(rollout))
    assert response.status_code == 200
    assert action_buttons(response.content.decode()) == set()
    assert "/act/" not in response.content.decode()


def test_it_refuses_an_action_to_a_viewer_with_403(viewer_client, rollout):
    token = csrf_token(viewer_client, page_url(rollout))
    response = viewer_client.post(act_url(rollout, "pause"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 403
    assert viewer_client.get(act_url(rollout, "pause")).status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS


def test_a_fleet_viewer_sees_the_rollout_without_buttons_and_may_not_act(rollout):
    viewer = client_for(member_of(rollout.devices.first().device.fleet, "viewer", "fleet-viewer"))
    html = viewer.get(page_url(rollout)).content.decode()
    assert "Batch 1 · up to 10 %" in html
    assert action_buttons(html) == set()
    token = csrf_token(viewer, page_url(rollout))
    assert viewer.post(act_url(rollout, "pause"), {"csrfmiddlewaretoken": token}).status_code == 403
    assert viewer.get("/admin/rollouts/rollout/").status_code == 200


def test_a_fleet_operator_may_pause(rollout):
    operator = client_for(member_of(rollout.devices.first().device.fleet, "operator", "fleet-operator"))
    assert action_buttons(operator.get(page_url(rollout)).content.decode()) == {
        "pause", "cancel", "rollback_all", "retry"
    }
    token = csrf_token(operator, page_url(rollout))
    operator.post(act_url(rollout, "pause"), {"csrfmiddlewaretoken": token})
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PAUSED


def test_a_member_of_another_fleet_gets_404_not_403(rollout):
    elsewhere = Fleet.objects.create(slug="elsewhere", name="Elsewhere", provisioning_key_hash="x" * 64)
    stranger = client_for(member_of(elsewhere, "operator", "stranger"))
    assert stranger.get(page_url(rollout)).status_code == 404
    assert stranger.get(act_url(rollout, "pause")).status_code == 404
    assert str(rollout.pk) not in stranger.get("/admin/rollouts/rollout/").content.decode()


def test_it_refuses_an_action_without_a_csrf_token(operator_client, rollout):
    response = operator_client.post(act_url(rollout, "pause"))
    assert response.status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS


def test_it_asks_before_pausing_and_pauses_on_confirmation(operator_client, rollout):
    confirmation = operator_client.get(act_url(rollout, "pause"))
    assert b"Yes, pause" in confirmation.content
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS
    token = csrf_token(operator_client, act_url(rollout, "pause"))
    response = operator_client.post(act_url(rollout, "pause"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == page_url(rollout)
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PAUSED
    assert rollout.events.filter(event_type="image.rollout_paused", data__actor="operator").exists()


def test_it_resumes_with_one_click(operator_client, rollout):
    services.rollout_pause(rollout_id=rollout.pk, actor="t")
    token = csrf_token(operator_client, page_url(rollout))
    operator_client.post(act_url(rollout, "resume"), {"csrfmiddlewaretoken": token})
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS


def test_it_answers_a_stale_action_with_a_warning_not_an_error(operator_client, rollout):
    services.rollout_cancel(rollout_id=rollout.pk, actor="t")
    token = csrf_token(operator_client, page_url(rollout))
    response = operator_client.post(act_url(rollout, "resume"), {"csrfmiddlewaretoken": token}, follow=True)
    assert response.status_code == 200
    assert b"Cannot resume a rollout that is cancelled." in response.content


def test_it_answers_404_for_an_unknown_action_or_rollout(operator_client, rollout):
    assert operator_client.get(act_url(rollout, "explode")).status_code == 404
    assert operator_client.get("/admin/rollouts/rollout/not-a-uuid/change/").status_code == 404


def test_every_form_of_the_pages_posts_with_a_csrf_token(rollout):
    services.rollout_pause(rollout_id=rollout.pk, actor="t")
    client = client_for(user_with("root", superuser=True))
    device = rollout.devices.filter(batch=1).first().device
    urls = {
        **console_urls(rollout),
        "cancel confirmation": act_url(rollout, "cancel"),
        "device action confirmation": f"/admin/devices/device/{device.pk}/act/rollback/?service=web",
        "policy page": f"/admin/rollouts/imagepolicy/{rollout.policy_id}/change/",
        "policy preview": f"/admin/rollouts/imagepolicy/{rollout.policy_id}/preview/?image={rollout.image}&tag=v3.0.0",
    }
    for name, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200, (name, response.status_code)
        html = response.content.decode()
        forms = re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S | re.I)
        posting = [form for form in forms if re.search(r'method="post"', form, flags=re.I)]
        # Every page has one at least: the admin's log-out button.
        assert posting, name
        assert all("csrfmiddlewaretoken" in form for form in posting), name


def test_it_retries_the_failed_devices_with_one_click(operator_client, rollout):
    services.rollout_pause(rollout_id=rollout.pk, actor="t")
    failed = rollout.devices.get(status="failed")
    token = csrf_token(operator_client, page_url(rollout))
    response = operator_client.post(act_url(rollout, "retry"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    rollout.refresh_from_db()
    failed.refresh_from_db()
    assert rollout.status == RolloutStatus.IN_PROGRESS
    assert (failed.status, failed.attempts) == ("scheduled", 2)
    assert rollout.events.filter(event_type="image.rollout_retried", data__actor="operator").exists()


def test_it_refuses_a_retry_to_a_viewer_and_to_a_finished_rollout(viewer_client, operator_client, rollout):
    token = csrf_token(viewer_client, page_url(rollout))
    assert viewer_client.post(act_url(rollout, "retry"), {"csrfmiddlewaretoken": token}).status_code == 403
    services.rollout_cancel(rollout_id=rollout.pk, actor="t")
    assert "retry" not in action_buttons(operator_client.get(page_url(rollout)).content.decode())
    token = csrf_token(operator_client, page_url(rollout))
    response = operator_client.post(act_url(rollout, "retry"), {"csrfmiddlewaretoken": token}, follow=True)
    assert b"Cannot retry a rollout that is cancelled." in response.content
    assert not rollout.events.filter(event_type="image.rollout_retried").exists()


def test_it_shows_deferred_devices_in_the_bars(operator_client):
    from .rollout_helpers import T0, build_fleet, policy, push, report, scheduled_device_ids, seconds, tick

    build_fleet(10)
    policy(update_strategy="auto", health_check_timeout_seconds=120)
    rollout = push(now=T0)
    report(sorted(scheduled_device_ids(rollout))[3:], tag="v2.0.0", at=T0 + seconds(30))
    for at in (30, 45, 120):
        tick(T0 + seconds(at))
    html = operator_client.get(page_url(rollout)).content.decode()
    assert "c-seg-deferred" in html
    assert "3 deferred" in html


def breached_rollout(*, auto_rollback: bool) -> Rollout:
    """Auto strategy over 10 devices; 4 crash: the threshold (0.2) pauses it."""
    from .rollout_helpers import T0, build_fleet, policy, push, report, scheduled_device_ids, seconds, tick

    build_fleet(10)
    policy(update_strategy="auto", min_failure_samples=1, auto_rollback_enabled=auto_rollback)
    rollout = push(now=T0)
    report(sorted(scheduled_device_ids(rollout))[:4], tag="v2.0.0", status="exited", health="none", at=T0 + seconds(30))
    for at in (45, 60):
        tick(T0 + seconds(at))
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.PAUSED, rollout.status_reason
    return rollout


def test_it_says_how_many_devices_the_threshold_rolled_back(operator_client):
    rollout = breached_rollout(auto_rollback=True)
    rolled_back = rollout.devices.filter(status="rolled_back").count()
    assert rolled_back == 10
    html = operator_client.get(page_url(rollout)).content.decode()
    assert "auto-rolled back 10 devices" in html


def test_it_says_nothing_of_auto_rollback_when_none_happened(operator_client):
    paused = breached_rollout(auto_rollback=False)
    assert "auto-rolled back" not in operator_client.get(page_url(paused)).content.decode()


def test_it_does_not_call_an_operator_s_roll_back_all_automatic(operator_client, rollout):
    services.rollout_rollback_all(rollout_id=rollout.pk, actor="t")
    assert rollout.devices.filter(status="rolled_back").exists()
    html = operator_client.get(page_url(rollout)).content.decode()
    assert "Rolled back by t." in html
    assert "auto-rolled back" not in html


def test_it_filters_and_pages_the_device_table(operator_client):
    rollout = rollout_in_progress(120, timezone.now())
    first = operator_client.get(page_url(rollout)).content.decode()
    assert "Page 1 of 3" in first
    filtered = operator_client.get(page_url(rollout) + "?status=healthy&batch=1").content.decode()
    assert "Devices <span class=\"c-muted\">12 matching" in filtered
    ignored = operator_client.get(page_url(rollout) + "?status=nonsense&batch=99&page=x&skip=x")
    assert ignored.status_code == 200


def test_it_filters_the_device_table_by_skip_reason(operator_client):
    rollout = rollout_in_progress(20, timezone.now())
    pending = rollout.devices.filter(status="pending").order_by("id")
    RolloutDevice.objects.filter(pk__in=[row.pk for row in pending[:2]]).update(status="skipped", skip_reason="pinned")
    RolloutDevice.objects.filter(pk=pending[2].pk).update(status="skipped", skip_reason="downgrade")
    html = operator_client.get(page_url(rollout) + "?skip=pinned").content.decode()
    assert "Devices <span class=\"c-muted\">2 matching" in html
    assert set(re.findall(r'data-skip="([a-z_]+)"', html)) == {"pinned"}
    assert '<option value="pinned" selected>' in html
    # The pager keeps the filter.
    assert "skip=downgrade" in operator_client.get(page_url(rollout) + "?skip=downgrade&status=skipped").context["filter_query"]


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_the_action_table_matches_what_the_services_accept(name):
    """Each action is offered for exactly the statuses its service accepts."""
    action = ACTIONS[name]
    rollout = rollout_in_progress(10, timezone.now())
    for status in RolloutStatus.values:
        Rollout.objects.filter(pk=rollout.pk).update(status=status)
        try:
            action.run(rollout_id=rollout.pk, actor="t")
        except services.InvalidTransition:
            accepted = False
        else:
            accepted = True
        # Repeating a transition that already happened is harmless, not offered.
        already_there = Rollout.objects.get(pk=rollout.pk).status == status and accepted
        assert accepted == (status in action.statuses or already_there), status


def queries_for(client, url: str) -> int:
    client.get(url)  # warms the per-process caches (content types), which are not per request
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def console_urls(rollout) -> dict[str, str]:
    device = rollout.devices.filter(batch=1).first().device
    return {
        "index": "/admin/",
        "fleet page": f"/admin/devices/fleet/{device.fleet_id}/change/",
        "device page": f"/admin/devices/device/{device.pk}/change/",
        "images": "/admin/images/",
        "image page": f"/admin/images/{rollout.image}/",
        "rollout page": page_url(rollout),
        "live region": page_url(rollout) + "?partial=1",
        "filtered devices": page_url(rollout) + "?status=healthy&batch=2&page=2",
        "skipped devices": page_url(rollout) + "?skip=pinned",
        "rollout list": "/admin/rollouts/rollout/",
        "confirmation": act_url(rollout, "pause"),
    }


@pytest.mark.slow
def test_the_pages_cost_the_same_queries_for_10_and_1000_devices(operator_client):
    """For a user with model permissions and for a fleet member alike."""
    member = member_of(Fleet.objects.create(slug="x", name="X", provisioning_key_hash="x" * 64), "viewer", "m")
    member_client = client_for(member)

    def measure(rollout) -> dict:
        FleetMembership.objects.filter(user=member).update(fleet=rollout.devices.first().device.fleet)
        return {
            (who, name): queries_for(client, url)
            for who, client in [("operator", operator_client), ("member", member_client)]
            for name, url in console_urls(rollout).items()
            # A viewer may not open an action's confirmation (403).
            if not (who == "member" and name == "confirmation")
        }

    at_10 = measure(rollout_in_progress(10, timezone.now(), failed=1))
    Rollout.objects.all().delete()
    DeviceService.objects.all().delete()
    at_1000 = measure(rollout_in_progress(1000, timezone.now(), failed=3))
    assert at_1000 == at_10
    assert max(at_10.values()) <= 16, at_10
