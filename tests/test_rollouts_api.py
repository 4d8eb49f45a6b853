import pytest
from django.utils import timezone

from rollouts.models import ImagePolicy, Rollout

from .rollout_helpers import T0, build_fleet, minutes, policy, push, report, scheduled_device_ids, tick

pytestmark = pytest.mark.django_db

ROLLOUT_FIELDS = {
    "id", "image", "new_tag", "new_digest", "digest_source", "policy", "strategy", "status", "status_reason",
    "trigger", "batch_percentages", "current_batch", "total_batches", "total_devices", "counts",
    "failure_rate", "max_failure_rate", "created_at", "started_at", "next_batch_at", "finished_at",
}


def test_it_creates_a_policy_with_contract_defaults_and_normalized_pattern(admin_api):
    response = admin_api.post("/api/v1/image-policies/", {"image_pattern": "iotistic/*"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["image_pattern"] == "docker.io/iotistic/*:*"
    assert body["update_strategy"] == "staged"
    assert body["batch_percentages"] == [10, 50, 100]
    assert body["max_failure_rate"] == 0.2
    assert body["batch_delay_minutes"] == 30
    assert body["min_failure_samples"] == 5
    assert body["maintenance_window"] is None


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_percentages", [50, 10, 100]),
        ("batch_percentages", [10, 50]),
        ("batch_percentages", [10, 10, 100]),
        ("batch_percentages", ["10", 100]),
        ("max_failure_rate", 1.5),
        ("min_failure_samples", 0),
        ("health_check_timeout_seconds", 0),
        ("batch_delay_minutes", -1),
        ("maintenance_window", {"days": ["sat"], "start": "02:00", "end": "06:00", "timezone": "Mars/Olympus"}),
        ("maintenance_window", {"days": ["someday"], "start": "02:00", "end": "06:00", "timezone": "UTC"}),
        ("maintenance_window", {"days": ["sat"], "start": "25:00", "end": "06:00", "timezone": "UTC"}),
        ("image_pattern", "bad pattern"),
        # Fits the column as sent, not once normalized (docker.io/library/...).
        ("image_pattern", "a" * 290),
        ("update_strategy", "yolo"),
        # Would overflow the next batch's start time.
        ("batch_delay_minutes", 1e300),
        ("fleet", "a\u0000"),
        ("device_uuids", [1]),
        ("device_tags", [f"t{n}" for n in range(60)]),
        ("maintenance_window", {"days": ["sat"], "start": "02:00\n", "end": "06:00", "timezone": "UTC"}),
    ],
)
def test_it_rejects_an_invalid_policy_with_a_400(admin_api, field, value):
    body = {"image_pattern": "iotistic/*", field: value}
    response = admin_api.post("/api/v1/image-policies/", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["fields"]
    assert not ImagePolicy.objects.exists()


def test_it_requires_a_window_for_the_scheduled_strategy(admin_api):
    response = admin_api.post(
        "/api/v1/image-policies/", {"image_pattern": "x/*", "update_strategy": "scheduled"}, format="json"
    )
    assert response.status_code == 400
    assert "maintenance_window" in response.json()["fields"]


def test_it_triggers_a_manual_rollout_and_shows_it_with_contract_fields(
    admin_api, django_capture_on_commit_callbacks
):
    build_fleet(20)
    policy()
    # The fan-out task is enqueued on commit; run it as the worker would.
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.post(
            "/api/v1/rollouts/", {"image": "iotistic/myapp", "tag": "v2.0.0"}, format="json"
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["trigger"] == "manual"
    assert ROLLOUT_FIELDS <= set(body)
    detail = admin_api.get(f"/api/v1/rollouts/{body['id']}/").json()
    assert detail["status"] == "in_progress"
    assert detail["total_devices"] == 20
    assert detail["counts"]["scheduled"] == 2
    assert detail["counts"]["pending"] == 18
    assert isinstance(detail["failure_rate"], float)
    assert detail["created_at"].endswith("Z")


def test_a_manual_trigger_that_names_a_digest_says_so(admin_api):
    build_fleet(2)
    policy()
    digest = "sha256:" + "ab" * 32
    response = admin_api.post(
        "/api/v1/rollouts/", {"image": "iotistic/myapp", "tag": "v2.0.0", "digest": digest}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["new_digest"], response.json()["digest_source"]) == (digest, "manual")


def test_it_answers_no_matching_policy_for_a_manual_trigger_without_policy(admin_api):
    response = admin_api.post("/api/v1/rollouts/", {"image": "nginx", "tag": "1.25"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "no_matching_policy"
    assert not Rollout.objects.exists()


def test_it_filters_rollouts_by_status_and_image(admin_api):
    build_fleet(5)
    policy()
    rollout = push()
    assert admin_api.get("/api/v1/rollouts/?image=iotistic/myapp").json()["count"] == 1
    assert admin_api.get("/api/v1/rollouts/?image=nginx").json()["count"] == 0
    assert admin_api.get("/api/v1/rollouts/?status=in_progress").json()["results"][0]["id"] == str(rollout.pk)
    assert admin_api.get("/api/v1/rollouts/?status=paused").json()["count"] == 0
    assert admin_api.get("/api/v1/rollouts/?status=bogus").status_code == 400


def test_it_lists_rollout_devices_with_filters_and_events_newest_first(admin_api):
    build_fleet(10)
    policy()
    rollout = push()
    rows = admin_api.get(f"/api/v1/rollouts/{rollout.pk}/devices/?status=scheduled").json()
    assert rows["count"] == 1
    row = rows["results"][0]
    assert set(row) == {
        "device_uuid", "device_name", "service", "batch", "status", "failure_reason", "skip_reason",
        "old_tag", "old_digest", "new_tag", "new_digest", "scheduled_at", "verdict_at",
        "via", "attempts",
    }
    assert row["skip_reason"] is None
    assert (row["batch"], row["old_tag"], row["new_tag"]) == (1, "v1.0.0", "v2.0.0")
    assert admin_api.get(f"/api/v1/rollouts/{rollout.pk}/devices/?batch=3").json()["count"] == 5
    events = admin_api.get(f"/api/v1/rollouts/{rollout.pk}/events/").json()["results"]
    stamps = [event["timestamp"] for event in events]
    assert stamps == sorted(stamps, reverse=True)
    assert {"image.rollout_created", "image.rollout_started", "image.batch_started", "image.device_scheduled"} <= {
        event["event_type"] for event in events
    }


def test_it_pauses_resumes_and_answers_409_for_impossible_transitions(admin_api):
    build_fleet(10)
    policy()
    # Actions run on the wall clock: push "now" so no device has timed out.
    rollout = push(now=timezone.now())
    url = f"/api/v1/rollouts/{rollout.pk}"
    assert admin_api.post(f"{url}/pause").json()["status"] == "paused"
    assert admin_api.post(f"{url}/pause").status_code == 200
    assert admin_api.post(f"{url}/start").status_code == 409
    assert admin_api.post(f"{url}/resume").json()["status"] == "in_progress"
    assert admin_api.post(f"{url}/cancel").json()["status"] == "cancelled"
    conflict = admin_api.post(f"{url}/resume")
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "invalid_transition"
    assert admin_api.post(f"{url}/rollback-all").json()["status"] == "rolled_back"


def test_it_needs_change_permission_to_steer_a_rollout(make_operator):
    build_fleet(3)
    policy()
    rollout = push()
    viewer = make_operator("rollouts.view_rollout")
    assert viewer.get(f"/api/v1/rollouts/{rollout.pk}/").status_code == 200
    assert viewer.post(f"/api/v1/rollouts/{rollout.pk}/pause").status_code == 403
    steerer = make_operator("rollouts.view_rollout", "rollouts.change_rollout")
    assert steerer.post(f"/api/v1/rollouts/{rollout.pk}/pause").status_code == 200


def test_it_answers_404_for_unknown_or_malformed_rollout_ids(admin_api):
    assert admin_api.get("/api/v1/rollouts/not-a-uuid/").status_code == 404
    missing = admin_api.post("/api/v1/rollouts/5b0e3c1e-0000-4000-8000-000000000000/pause")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_it_lists_only_active_rollouts_with_active_true(admin_api):
    build_fleet(5)
    policy()
    running = push()
    finished = push(tag="v3.0.0")  # supersedes the first
    active = admin_api.get("/api/v1/rollouts/?active=true").json()
    assert [row["id"] for row in active["results"]] == [str(finished.pk)]
    inactive = admin_api.get("/api/v1/rollouts/?active=false").json()
    assert [row["id"] for row in inactive["results"]] == [str(running.pk)]
    assert admin_api.get("/api/v1/rollouts/?active=maybe").status_code == 400


def test_it_selects_active_rollouts_with_live_counts():
    from rollouts.selectors import active_rollouts

    build_fleet(10)
    policy()
    rollout = push()
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=T0 + minutes(1))
    tick(T0 + minutes(1))
    (row,) = active_rollouts()
    assert (row.pk, row.count_healthy, row.count_pending) == (rollout.pk, 1, 9)


def test_it_refuses_a_filter_value_it_cannot_read(admin_api):
    response = admin_api.get("/api/v1/image-policies/?enabled=maybe")
    assert response.status_code == 400
    assert "enabled" in response.json()["fields"]
