"""The dry run, `POST /api/v1/rollouts/preview`: what the manual trigger
would do now, equal to the rollout it then creates, writing nothing."""

from collections import Counter
from datetime import timedelta

import pytest
from django.apps import apps
from django.db.models import Count

from devices.models import DeviceService, Fleet
from rollouts.models import ImagePolicy, Rollout, RolloutDevice
from rollouts.services import rollout_create_for_push, rollout_fan_out

from .factories import operator
from .rollout_helpers import IMAGE, T0, build_fleet, policy
from .test_version_rules import mixed_fleet

pytestmark = pytest.mark.django_db

URL = "/api/v1/rollouts/preview"


def a_mixed_fleet() -> None:
    """Devices the push 2.2.0 updates (minor and patch, some through the
    stepping stone 2.0.0), skips (downgrade, variant, current, pinned)."""
    tags = ["1.5.0"] * 12 + ["2.1.0"] * 40 + ["2.1.9"] * 30 + ["3.0.0"] * 7 + ["2.1.0-alpine"] * 4
    tags += ["2.2.0"] * 5 + ["2.1.0"] * 3
    mixed_fleet(tags, pinned=tuple(range(len(tags) - 3, len(tags))))


def row_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


def test_the_preview_equals_the_rollout_created_right_after_it(admin_api, settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    a_mixed_fleet()
    pol = policy(required_versions=["2.0.0"], auto_approve_max_risk="medium", batch_percentages=[10, 50, 100])
    body = {"image": IMAGE, "tag": "2.2.0"}
    preview = admin_api.post(URL, body, format="json")
    assert preview.status_code == 200, preview.json()
    preview = preview.json()
    created = admin_api.post("/api/v1/rollouts/", body, format="json").json()
    rollout_fan_out(rollout_id=created["id"], now=T0)
    rollout = Rollout.objects.get(pk=created["id"])
    rows = RolloutDevice.objects.filter(rollout=rollout)
    batches = dict(rows.filter(batch__isnull=False).values_list("batch").annotate(n=Count("id")))
    skipped = dict(rows.filter(status="skipped").values_list("skip_reason").annotate(n=Count("id")))
    assert preview["policy"] == pol.pk
    assert {b["batch"]: b["devices"] for b in preview["batches"]} == batches
    assert preview["skipped"] == skipped == {"already_current": 5, "downgrade": 7, "pinned": 3, "variant": 4}
    assert preview["total_devices"] == rows.count() == 101
    assert preview["risk"] == rollout.risk == "high"
    assert preview["approval_required"] is True and rollout.status == "awaiting_approval"
    assert preview["upgrade_paths"] == [{"from": "1.5.0", "via": ["2.0.0"], "devices": 12}]
    uuids_by_batch = {}
    for batch, uuid in rows.filter(batch__isnull=False).values_list("batch", "device__uuid"):
        uuids_by_batch.setdefault(batch, set()).add(str(uuid))
    for batch in preview["batches"]:
        assert 0 < len(batch["sample_devices"]) <= 10
        assert set(batch["sample_devices"]) <= uuids_by_batch[batch["batch"]]


def test_the_preview_writes_nothing(admin_api):
    a_mixed_fleet()
    policy(required_versions=["2.0.0"])
    before = row_counts()
    targets = list(DeviceService.objects.order_by("pk").values_list("target_tag", "target_digest"))
    response = admin_api.post(URL, {"image": IMAGE, "tag": "2.2.0", "allow_downgrade": True}, format="json")
    assert response.status_code == 200
    assert response.json()["skipped"].get("downgrade") is None
    assert row_counts() == before
    assert list(DeviceService.objects.order_by("pk").values_list("target_tag", "target_digest")) == targets


def test_the_preview_judges_already_current_by_digest_like_the_fan_out(admin_api, settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    digest_a, digest_b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    build_fleet(4, tag="latest")
    DeviceService.objects.filter(pk__in=DeviceService.objects.order_by("pk").values("pk")[:1]).update(
        target_digest=digest_b
    )
    DeviceService.objects.filter(target_digest__isnull=True).update(target_digest=digest_a)
    policy()
    preview = admin_api.post(URL, {"image": IMAGE, "tag": "latest", "digest": digest_b}, format="json").json()
    assert preview["skipped"] == {"already_current": 1}
    assert sum(batch["devices"] for batch in preview["batches"]) == 3


def test_a_device_that_reports_the_pushed_digest_under_another_target_is_sent_it(admin_api, settings):
    # CONTRACT section 6: devices whose *target* has the digest are skipped;
    # one whose target names another digest is sent the push, whatever it
    # reports (a report is not what the control plane told it to run).
    settings.REGISTRY_RESOLVE_DIGESTS = False
    digest_a, digest_b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    build_fleet(4, tag="latest")
    DeviceService.objects.update(target_digest=digest_a)
    reporting = DeviceService.objects.order_by("pk").first()
    DeviceService.objects.filter(pk=reporting.pk).update(
        reported_image=IMAGE, reported_tag="latest", reported_digest=digest_b
    )
    policy(update_strategy="auto")
    body = {"image": IMAGE, "tag": "latest", "digest": digest_b}
    preview = admin_api.post(URL, body, format="json").json()
    assert preview["skipped"] == {}
    assert sum(batch["devices"] for batch in preview["batches"]) == 4
    created = admin_api.post("/api/v1/rollouts/", body, format="json")
    assert created.status_code == 201, created.json()
    rollout_fan_out(rollout_id=created.json()["id"], now=T0)
    row = RolloutDevice.objects.get(rollout_id=created.json()["id"], device_id=reporting.device_id)
    assert (row.status, row.skip_reason) == ("scheduled", None)
    assert DeviceService.objects.get(pk=reporting.pk).target_digest == digest_b


def test_a_push_whose_digest_devices_only_report_is_not_answered_no_affected_devices():
    digest_a, digest_b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    build_fleet(2, tag="latest")
    DeviceService.objects.update(target_digest=digest_a, reported_image=IMAGE, reported_tag="latest", reported_digest=digest_b)
    policy()
    outcome = rollout_create_for_push(image=IMAGE, tag="latest", digest=digest_b, now=T0)
    assert outcome.status == "rollout_created"


def test_the_estimate_follows_batches_delays_and_observed_verdict_times(admin_api, settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    settings.ROLLOUT_TICK_SECONDS = 15
    build_fleet(20, tag="1.0.0")
    policy(batch_percentages=[50, 100], batch_delay_minutes=10, health_check_timeout_seconds=300)
    first = admin_api.post(URL, {"image": IMAGE, "tag": "1.0.1"}, format="json").json()
    # No verdict seen yet: the health-check timeout stands in for it.
    assert first["estimated_duration_seconds"] == 2 * (300 + 15) + 600
    done = Rollout.objects.create(image=IMAGE, new_tag="0.9.0", trigger="manual", strategy="staged", started_at=T0)
    device_ids = DeviceService.objects.values_list("device_id", flat=True)[:3]
    RolloutDevice.objects.bulk_create(
        RolloutDevice(
            rollout=done, device_id=device_id, service="web", status="healthy", new_tag="0.9.0",
            scheduled_at=T0, verdict_at=T0 + timedelta(seconds=seconds),
        )
        for device_id, seconds in zip(device_ids, [30, 40, 90])
    )
    second = admin_api.post(URL, {"image": IMAGE, "tag": "1.0.1"}, format="json").json()
    assert second["estimated_duration_seconds"] == 2 * (40 + 15) + 600


def test_the_preview_answers_no_matching_policy_like_the_trigger(admin_api):
    response = admin_api.post(URL, {"image": IMAGE, "tag": "2.0.0"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "no_matching_policy"


@pytest.mark.parametrize(
    "body", [{"image": IMAGE}, {"image": "UPPER CASE"}, {"image": IMAGE, "tag": "2.0.0", "required_versions": ["x"]}]
)
def test_the_preview_refuses_bad_input_with_400(admin_api, body):
    policy()
    response = admin_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]


def test_the_preview_needs_the_right_to_trigger(make_operator):
    build_fleet(2, tag="1.0.0")
    policy()
    viewer = make_operator("rollouts.view_rollout", "rollouts.view_imagepolicy")
    response = viewer.post(URL, {"image": IMAGE, "tag": "1.0.1"}, format="json")
    assert response.status_code == 403
    assert not Rollout.objects.exists()


def test_a_fleet_member_previews_only_policies_of_their_fleet(api_client):
    from devices.models import FleetMembership

    mine = build_fleet(2, tag="1.0.0")
    other = Fleet.objects.create(slug="other", name="Other", provisioning_key_hash="o" * 64)
    their_policy = policy(fleet=other)
    user, token = operator(username="member")
    FleetMembership.objects.create(user=user, fleet=mine, role="operator")
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    body = {"image": IMAGE, "tag": "1.0.1", "policy": their_policy.pk}
    response = api_client.post(URL, body, format="json")
    assert response.status_code == 400
    assert "policy" in response.json()["fields"]
    my_policy = policy(fleet=mine)
    response = api_client.post(URL, {**body, "policy": my_policy.pk}, format="json")
    assert response.status_code == 200, response.json()
    assert Counter(b["devices"] for b in response.json()["batches"]) == Counter({1: 2})


def staff(*perms: str, username: str = "staff"):
    user, _ = operator(*perms, username=username)
    user.is_staff = True
    user.save()
    return user


def test_the_admin_policy_page_has_a_preview_button_that_shows_it(client):
    build_fleet(4, tag="1.0.0")
    pol = policy(auto_approve_max_risk="low")
    client.force_login(
        staff("rollouts.view_imagepolicy", "rollouts.change_imagepolicy", "rollouts.add_rollout")
    )
    page = client.get(f"/admin/rollouts/imagepolicy/{pol.pk}/change/").content.decode()
    preview_url = f"/admin/rollouts/imagepolicy/{pol.pk}/preview/"
    assert f'href="{preview_url}"' in page
    before = row_counts()
    html = client.get(preview_url, {"image": IMAGE, "tag": "1.1.0"}).content.decode()
    assert 'data-risk="medium"' in html and "needs approval" in html
    assert "4 devices" in html
    assert row_counts() == before
    bad = client.get(preview_url, {"image": IMAGE, "tag": "-bad"})
    assert bad.status_code == 200 and "errornote" in bad.content.decode()


def test_the_admin_preview_needs_the_right_to_trigger(client):
    pol = policy()
    client.force_login(staff("rollouts.view_imagepolicy"))
    response = client.get(f"/admin/rollouts/imagepolicy/{pol.pk}/preview/", {"image": IMAGE, "tag": "1.1.0"})
    assert response.status_code == 403


def test_the_estimate_counts_the_rounds_of_a_ramp(admin_api, settings):
    settings.REGISTRY_RESOLVE_DIGESTS = False
    settings.ROLLOUT_TICK_SECONDS = 15
    build_fleet(100, tag="1.0.0")
    policy(update_strategy="auto", ramp_initial=10, ramp_factor=2.0, health_check_timeout_seconds=300)
    preview = admin_api.post(URL, {"image": IMAGE, "tag": "1.0.1"}, format="json").json()
    # Released at most 10, then 10 + 2 x 10 = 30, then 70, then all 100.
    assert preview["estimated_duration_seconds"] == 4 * (300 + 15)
    ImagePolicy.objects.update(ramp_initial=None)
    whole = admin_api.post(URL, {"image": IMAGE, "tag": "1.0.1"}, format="json").json()
    assert whole["estimated_duration_seconds"] == 300 + 15


def test_the_preview_costs_the_same_queries_for_10_and_2000_devices(admin_api, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from devices.models import Device

    settings.REGISTRY_RESOLVE_DIGESTS = False
    policy(required_versions=["1.5.0"])
    counts = []
    for size in (10, 2000):
        Device.objects.all().delete()
        mixed_fleet([f"1.{i % 8}.0" for i in range(size)], pinned=(0,))
        with CaptureQueriesContext(connection) as queries:
            response = admin_api.post(URL, {"image": IMAGE, "tag": "1.9.0"}, format="json")
        assert response.status_code == 200
        assert response.json()["total_devices"] == size
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
