"""GET /images/, GET /devices/?image=&behind=true, GET /rollouts/?policy=: the inventory."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices.models import DeviceService
from rollouts.models import Rollout, RolloutDevice

from .factories import DeviceFactory, FleetFactory
from .rollout_helpers import policy

pytestmark = pytest.mark.django_db

APP = "docker.io/acme/app"
DB = "docker.io/library/postgres"
D241 = "sha256:" + "24" * 32
D250 = "sha256:" + "25" * 32


def device(fleet, *, target, running, changed_ago=timedelta(hours=1)):
    """A device whose service `web` targets and reports (image, tag, digest)."""
    made = DeviceFactory(fleet=fleet)
    DeviceService.objects.create(
        device=made, name="web",
        target_image=target[0], target_tag=target[1], target_digest=target[2],
        target_changed_at=timezone.now() - changed_ago,
        reported_image=running[0] if running else None,
        reported_tag=running[1] if running else None,
        reported_digest=running[2] if running else None,
        reported_at=timezone.now() if running else None,
    )
    return made


def rollout(image, tag, digest, status, *, created_ago, finished_ago=None, **fields):
    now = timezone.now()
    return Rollout.objects.create(
        image=image, new_tag=tag, new_digest=digest, status=status, trigger="webhook",
        strategy="staged", created_at=now - created_ago,
        finished_at=now - finished_ago if finished_ago is not None else None, **fields,
    )


def verdicts(made_rollout, devices, status, *, ago, reason=""):
    RolloutDevice.objects.bulk_create(
        RolloutDevice(
            rollout=made_rollout, device=each, service="web", status=status, failure_reason=reason,
            new_tag=made_rollout.new_tag, verdict_at=timezone.now() - ago,
        )
        for each in devices
    )


@pytest.fixture
def fleet_built():
    fleet, other = FleetFactory(slug="edge"), FleetFactory(slug="lab")
    current = [device(fleet, target=(APP, "2.4.1", D241), running=(APP, "2.4.1", D241)) for _ in range(3)]
    # Target moved to 2.4.1 long ago, still runs 2.3.0: behind and drifting.
    drifter = device(fleet, target=(APP, "2.4.1", D241), running=(APP, "2.3.0", None))
    # On the old version on purpose (target = report): behind, not drifting.
    old = [device(fleet, target=(APP, "2.3.0", None), running=(APP, "2.3.0", None)) for _ in range(2)]
    # Its target just changed: behind, not drifting yet.
    fresh = device(other, target=(APP, "2.4.1", D241), running=(APP, "2.3.0", None), changed_ago=timedelta(0))
    databases = [device(other, target=(DB, "16", None), running=(DB, "16", None)) for _ in range(2)]
    done = rollout(APP, "2.4.1", D241, "completed", created_ago=timedelta(days=3), finished_ago=timedelta(days=2))
    rollout(APP, "2.2.0", None, "completed", created_ago=timedelta(days=9), finished_ago=timedelta(days=8))
    rollout(APP, "2.4.0", None, "rolled_back", created_ago=timedelta(days=4), finished_ago=timedelta(days=4))
    rollout(APP, "2.4.2", None, "cancelled", created_ago=timedelta(days=1), finished_ago=timedelta(days=1))
    newest = rollout(APP, "2.5.0", D250, "pending", created_ago=timedelta(hours=1))
    verdicts(done, current, "healthy", ago=timedelta(days=2))
    verdicts(done, [drifter], "failed", ago=timedelta(days=2), reason="unhealthy")
    ancient = rollout(APP, "1.0.0", None, "completed", created_ago=timedelta(days=60), finished_ago=timedelta(days=59))
    verdicts(ancient, old + [fresh], "failed", ago=timedelta(days=59), reason="crashed")
    return {"done": done, "newest": newest, "drifter": drifter, "old": old, "fresh": fresh, "db": databases}


def test_it_lists_images_with_versions_behind_drifting_and_success_rate(admin_api, fleet_built):
    response = admin_api.get("/api/v1/images/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["count"] == 2
    app, db = body["results"]
    assert (app["image"], app["devices"], db["image"], db["devices"]) == (APP, 7, DB, 2)
    done = fleet_built["done"]
    assert app["latest"] == {
        "tag": "2.4.1", "digest": D241, "rollout_id": str(done.pk),
        "completed_at": done.finished_at.isoformat().replace("+00:00", "Z"),
    }
    assert (app["newest_push"]["tag"], app["newest_push"]["digest"]) == ("2.5.0", D250)
    assert app["versions"] == [
        {"tag": "2.4.1", "digest": D241, "targeted": 5, "running": 3},
        {"tag": "2.3.0", "digest": None, "targeted": 2, "running": 4},
    ]
    assert (app["behind"], app["drifting"]) == (4, 1)
    assert app["rollouts"] == {"total": 6, "completed": 3, "rolled_back": 1, "cancelled": 1}
    assert app["success_rate"] == 0.75
    assert (db["latest"], db["newest_push"], db["behind"], db["success_rate"]) == (None, None, 0, None)
    assert db["versions"] == [{"tag": "16", "digest": None, "targeted": 2, "running": 2}]


def test_it_filters_images_by_fleet_and_image(admin_api, fleet_built):
    edge = admin_api.get("/api/v1/images/?fleet=edge").json()["results"]
    assert [(row["image"], row["devices"], row["behind"]) for row in edge] == [(APP, 6, 3)]
    only = admin_api.get("/api/v1/images/?image=postgres").json()["results"]
    assert [row["image"] for row in only] == [DB]
    bad = admin_api.get("/api/v1/images/?image=Not A Repo")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid")


def test_it_costs_the_same_queries_for_few_and_many_images_and_devices(admin_api, fleet_built):
    def queries() -> int:
        with CaptureQueriesContext(connection) as context:
            assert admin_api.get("/api/v1/images/").status_code == 200
        return len(context.captured_queries)

    few = queries()
    fleet = FleetFactory()
    for number in range(6):
        for _ in range(3):
            device(fleet, target=(f"docker.io/acme/extra{number}", "1", None), running=None)
        rollout(f"docker.io/acme/extra{number}", "1", None, "completed",
                created_ago=timedelta(days=1), finished_ago=timedelta(hours=2))
    assert admin_api.get("/api/v1/images/").json()["count"] == 8
    assert queries() == few


def test_it_needs_the_view_device_permission(make_operator, fleet_built):
    assert make_operator().get("/api/v1/images/").status_code == 403
    assert make_operator("devices.view_device").get("/api/v1/images/").status_code == 200


def test_it_lists_the_devices_behind_an_image(admin_api, fleet_built):
    body = admin_api.get(f"/api/v1/devices/?image={APP}&behind=true").json()
    behind = {fleet_built["drifter"].uuid, fleet_built["fresh"].uuid, *(d.uuid for d in fleet_built["old"])}
    assert {row["uuid"] for row in body["results"]} == {str(uuid) for uuid in behind}
    assert admin_api.get("/api/v1/devices/?image=acme/app&behind=false").json()["count"] == 3
    assert admin_api.get("/api/v1/devices/?image=postgres&behind=true").json()["count"] == 0
    assert admin_api.get("/api/v1/devices/?image=postgres").json()["count"] == 2
    missing = admin_api.get("/api/v1/devices/?behind=true")
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid")


def test_it_filters_rollouts_by_policy(admin_api):
    first, second = policy("docker.io/acme/*:*"), policy("docker.io/other/*:*")
    rollout(APP, "1", None, "completed", created_ago=timedelta(days=1), policy=first)
    rollout(APP, "2", None, "completed", created_ago=timedelta(days=1), policy=second)
    body = admin_api.get(f"/api/v1/rollouts/?policy={first.pk}").json()
    assert [row["new_tag"] for row in body["results"]] == ["1"]
    assert admin_api.get("/api/v1/rollouts/?policy=nope").status_code == 400


def test_newest_push_is_the_newest_push_whatever_came_of_it(admin_api, client, fleet_built):
    body = {"push_data": {"tag": "2.6.0"}, "repository": {"repo_name": "acme/app"}}
    answer = client.post("/api/v1/webhooks/docker-registry", body, content_type="application/json")
    assert answer.json()["status"] == "no_matching_policy"
    row = admin_api.get("/api/v1/images/?image=acme/app").json()["results"][0]
    assert (row["newest_push"]["tag"], row["newest_push"]["digest"]) == ("2.6.0", None)
    # The rollouts it did not create are not counted.
    assert row["rollouts"]["total"] == 6
    # An older push arriving late (a virtual clock) does not replace it.
    from rollouts.services.pushes import push_record

    push_record(image=APP, tag="0.1", digest=None, trigger="webhook", now=timezone.now() - timedelta(days=1))
    row = admin_api.get("/api/v1/images/?image=acme/app").json()["results"][0]
    assert row["newest_push"]["tag"] == "2.6.0"
