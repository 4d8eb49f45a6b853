"""POST /api/v1/webhooks/docker-registry: pushes become rollouts, exactly once."""

import json
import threading
import time
import uuid

import pytest
from django.db import connection
from django.db.models import Count
from django.test import Client
from rest_framework.throttling import ScopedRateThrottle

from rollouts.models import EventType, Rollout, RolloutDevice, RolloutEvent
from webhooks import services
from webhooks.models import WebhookDelivery
from webhooks.views import MAX_BODY_BYTES

from .factories import WEBHOOK_FIXTURES as FIXTURES
from .factories import DeviceServiceFactory
from .rollout_helpers import IMAGE, build_fleet, policy

URL = "/api/v1/webhooks/docker-registry"
GITHUB_HEADERS = {"X-GitHub-Event": "package", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}

pytestmark = pytest.mark.django_db


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def dockerhub_push(tag: str = "v2.0.1") -> bytes:
    """A Docker Hub push of IMAGE (docker.io/iotistic/myapp)."""
    payload = fixture("dockerhub-push.json")
    payload["repository"]["repo_name"] = "iotistic/myapp"
    payload["push_data"]["tag"] = tag
    return json.dumps(payload).encode()


def post(client, body: bytes, **headers):
    return client.post(URL, body, content_type="application/json", headers=headers)


# --- pushes and their outcomes ---


def test_it_creates_a_pending_rollout_for_a_matching_push(client):
    policy()
    build_fleet(3)
    response = post(client, dockerhub_push())
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["image"], body["tag"]) == ("rollout_created", IMAGE, "v2.0.1")
    rollout = Rollout.objects.get()
    assert (str(rollout.id), rollout.status, rollout.trigger) == (body["rollout_id"], "pending", "webhook")
    delivery = WebhookDelivery.objects.get()
    assert str(delivery.id) == body["delivery_id"]
    assert (delivery.outcome, delivery.rollout) == ("rollout_created", rollout)


def test_it_names_the_registry_and_delivery_in_the_webhook_received_event(client):
    policy()
    build_fleet(1)
    body = post(client, dockerhub_push()).json()
    event = RolloutEvent.objects.get(event_type=EventType.WEBHOOK_RECEIVED)
    assert event.data["registry"] == "dockerhub"
    assert event.data["delivery_id"] == body["delivery_id"]


FIXTURE_PUSHES = [
    ("dockerhub-push.json", {}, "docker.io/svendowideit/testhook", "latest", None),
    (
        "ghcr-package-published.json",
        GITHUB_HEADERS,
        "ghcr.io/acme-iot/edge-agent",
        "2.4.1",
        "sha256:5d41402abc4b2a76b9719d911017c592ae4e4b1c0f2d3a8e6b0c1f2a3b4c5d6e",
    ),
    (
        "distribution-push.json",
        {},
        "registry.acme.example:5000/acme/telemetry",
        "3.1.0",
        "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
    ),
    (
        "harbor-push.json",
        {},
        "hub.harbor.com/test-webhook/debian",
        "latest",
        "sha256:8a9e9863dbb6e10edb5adfe917c00da84e1700fa76e7ed02476aa6e6fb8ee0d8",
    ),
    ("quay-push.json", {}, "quay.io/dgangaia/test", "latest", None),
]


@pytest.mark.parametrize(("name", "headers", "image", "tag", "digest"), FIXTURE_PUSHES)
def test_it_creates_a_rollout_from_each_registry_fixture(client, name, headers, image, tag, digest):
    policy("*")
    DeviceServiceFactory(target_image=image, target_tag="0.9.0")
    response = post(client, (FIXTURES / name).read_bytes(), **headers)
    assert response.status_code == 202
    assert response.json()["status"] == "rollout_created"
    rollout = Rollout.objects.get()
    assert (rollout.image, rollout.new_tag, rollout.new_digest) == (image, tag, digest)


def test_it_answers_no_matching_policy(client):
    build_fleet(1)
    body = post(client, dockerhub_push()).json()
    assert (body["status"], body["rollout_id"]) == ("no_matching_policy", None)
    assert WebhookDelivery.objects.get().outcome == "no_matching_policy"
    assert not Rollout.objects.exists()


def test_it_answers_no_affected_devices_for_the_tag_the_devices_already_run(client):
    policy()
    build_fleet(2, tag="v2.0.1")
    body = post(client, dockerhub_push("v2.0.1")).json()
    assert (body["status"], body["rollout_id"]) == ("no_affected_devices", None)
    assert not Rollout.objects.exists()


def test_it_handles_each_push_of_an_envelope_and_answers_with_the_surviving_rollout(client):
    policy("*")
    DeviceServiceFactory(target_image="registry.acme.example:5000/acme/telemetry", target_tag="3.0.0")
    envelope = fixture("distribution-push.json")
    latest = json.loads(json.dumps(envelope["events"][0]))
    latest["target"]["tag"] = "latest"
    envelope["events"].append(latest)
    body = post(client, json.dumps(envelope).encode()).json()
    assert [(push["tag"], push["status"]) for push in body["pushes"]] == [
        ("3.1.0", "rollout_created"),
        ("latest", "rollout_created"),
    ]
    assert (body["tag"], body["rollout_id"]) == ("3.1.0", body["pushes"][0]["rollout_id"])
    # Several tags of one image: `latest` is acted on first, so the versioned
    # tag's rollout supersedes it and is the one the answer names.
    statuses = dict(Rollout.objects.values_list("new_tag", "status"))
    assert statuses == {"3.1.0": "pending", "latest": "superseded"}


def test_it_records_an_ignored_github_ping(client):
    ping = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    response = post(client, ping, **{**GITHUB_HEADERS, "X-GitHub-Event": "ping"})
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["rollout_id"], body["image"]) == ("ignored", None, None)
    assert "ping" in body["reason"]
    delivery = WebhookDelivery.objects.get()
    assert delivery.outcome == "ignored"
    assert delivery.delivery_key == f"github:{GITHUB_HEADERS['X-GitHub-Delivery']}"


def test_it_keeps_the_headers_of_interest_but_no_credentials(client, settings):
    settings.DOCKER_WEBHOOK_SECRET = "s3cret"
    post(client, dockerhub_push(), Authorization="Bearer s3cret", **{"User-Agent": "Go-http-client/1.1"})
    headers = WebhookDelivery.objects.get().headers
    assert headers["User-Agent"] == "Go-http-client/1.1"
    assert "Authorization" not in headers
    assert "s3cret" not in json.dumps(headers)


# --- duplicates ---


def test_it_answers_a_repeated_body_as_a_duplicate_with_the_first_rollout(client):
    policy()
    build_fleet(2)
    first = post(client, dockerhub_push()).json()
    second = post(client, dockerhub_push())
    assert second.status_code == 202
    body = second.json()
    assert body["status"] == "duplicate"
    assert body["first_status"] == "rollout_created"
    assert (body["rollout_id"], body["delivery_id"]) == (first["rollout_id"], first["delivery_id"])
    assert Rollout.objects.count() == 1
    assert WebhookDelivery.objects.count() == 1


def test_it_answers_a_repeated_github_delivery_id_as_a_duplicate_whatever_the_body(client):
    body = fixture("ghcr-package-published.json")
    post(client, json.dumps(body).encode(), **GITHUB_HEADERS)
    body["sender"]["login"] = "someone-else"
    assert post(client, json.dumps(body).encode(), **GITHUB_HEADERS).json()["status"] == "duplicate"


def test_it_acts_on_the_same_github_body_under_a_new_delivery_id(client):
    body = (FIXTURES / "ghcr-package-published.json").read_bytes()
    post(client, body, **GITHUB_HEADERS)
    again = post(client, body, **{**GITHUB_HEADERS, "X-GitHub-Delivery": str(uuid.uuid4())})
    assert again.json()["status"] == "no_matching_policy"
    assert WebhookDelivery.objects.count() == 2


def _wait_until_another_backend_waits_for_a_lock(pids: list[int]) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        mine = cursor.fetchone()[0]
        others = [pid for pid in pids if pid != mine]
        for _ in range(1000):
            cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = ANY(%s) AND NOT granted", [others])
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.01)
    return False


@pytest.mark.django_db(transaction=True)
def test_it_creates_one_rollout_when_two_copies_arrive_at_once(monkeypatch):
    policy()
    build_fleet(3)
    body = dockerhub_push()
    pids, answers, overlapped = [], [], []
    create = services.rollout_create_for_push

    def create_then_hold_the_transaction(**kwargs):
        # Keep the winner's transaction open until the other copy is
        # blocked on the delivery's unique key: the race, made certain.
        outcome = create(**kwargs)
        overlapped.append(_wait_until_another_backend_waits_for_a_lock(pids))
        return outcome

    monkeypatch.setattr(services, "rollout_create_for_push", create_then_hold_the_transaction)
    barrier = threading.Barrier(2)

    def deliver():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            barrier.wait()
            response = post(Client(), body)
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert overlapped == [True]
    assert sorted((status, answer["status"]) for status, answer in answers) == [
        (202, "duplicate"),
        (202, "rollout_created"),
    ]
    assert answers[0][1]["rollout_id"] == answers[1][1]["rollout_id"]
    assert Rollout.objects.count() == 1
    assert WebhookDelivery.objects.count() == 1


# --- answer time does not depend on the fleet ---


@pytest.mark.slow
@pytest.mark.parametrize(
    ("devices", "batches"), [(1, {1: 1}), (20_000, {1: 2_000, 2: 8_000, 3: 10_000})]
)
def test_it_answers_with_a_constant_number_of_queries_and_fans_out_after_commit(
    client, devices, batches, django_assert_num_queries, django_capture_on_commit_callbacks
):
    policy()
    build_fleet(devices)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        # Insert the delivery, record the image's newest push, match the policy, the image's distinct tags
        # (a loose index scan), one probe for affected devices, take the image's advisory lock, insert the rollout and its
        # two events, lock older rollouts of the image, record the answer,
        # count the delivery (fleet_webhook_deliveries_total); plus three
        # savepoint pairs.
        with django_assert_num_queries(18):
            response = post(client, dockerhub_push())
    assert response.status_code == 202
    rollout = Rollout.objects.get(pk=response.json()["rollout_id"])
    assert not RolloutDevice.objects.filter(rollout=rollout).exists()
    for callback in callbacks:
        callback()
    rollout.refresh_from_db()
    assert rollout.total_devices == devices
    filled = RolloutDevice.objects.filter(rollout=rollout).values_list("batch").annotate(n=Count("id"))
    assert dict(filled) == batches


# --- what is refused ---


@pytest.mark.parametrize(
    ("body", "error", "detail"),
    [
        (b"{not json", "malformed_json", "not valid JSON"),
        (b"", "malformed_json", "empty"),
        (b'{"hello": "world"}', "unknown_payload", "Accepted shapes: GitHub"),
        (dockerhub_push("-bad tag"), "invalid_push", "is not a valid image tag"),
        (
            json.dumps({"docker_url": "quay.io/a/b", "updated_tags": [7]}).encode(),
            "invalid_push",
            "expected a string, got int",
        ),
        (
            json.dumps(
                {
                    "type": "PUSH_ARTIFACT",
                    "event_data": {
                        "resources": [{"tag": "1", "digest": "sha256:zz", "resource_url": "h.example/a/b:1"}],
                        "repository": {"repo_full_name": "a/b"},
                    },
                }
            ).encode(),
            "invalid_push",
            "'sha256:zz' is not a valid image digest",
        ),
    ],
    ids=["malformed", "empty", "unknown", "bad-tag", "tag-type", "bad-digest"],
)
def test_it_refuses_a_bad_body_with_a_400_and_stores_nothing(client, body, error, detail):
    policy("*")
    build_fleet(1)
    response = post(client, body)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert detail in response.json()["detail"]
    assert not WebhookDelivery.objects.exists()
    assert not Rollout.objects.exists()


def test_it_refuses_a_body_over_one_mebibyte_with_a_413(client):
    body = dockerhub_push() + b" " * MAX_BODY_BYTES
    response = post(client, body)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert not WebhookDelivery.objects.exists()


def test_it_accepts_a_body_of_exactly_one_mebibyte(client):
    push = dockerhub_push()
    response = post(client, push + b" " * (MAX_BODY_BYTES - len(push)))
    assert response.status_code == 202


def test_it_throttles_the_endpoint(client, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "webhooks", "2/min")
    assert [post(client, dockerhub_push(f"v{n}")).status_code for n in range(3)] == [202, 202, 429]
    assert WebhookDelivery.objects.count() == 2


def test_it_answers_json_whatever_the_accept_header(client):
    response = post(client, dockerhub_push(), Accept="text/plain")
    assert (response.status_code, response["Content-Type"]) == (202, "application/json")


def test_it_allows_only_post(client):
    response = client.get(URL)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_it_answers_the_test_url(client):
    response = client.get(URL + "/test")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})

