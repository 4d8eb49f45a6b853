"""Digest pinning against a real registry: pushes without a digest are
resolved in the worker, every batch gets the same digest, require_digest
waits for the registry."""

import json
import uuid as uuid_lib
from collections import Counter

import pytest

from devices.keys import hash_key
from devices.models import Device, DeviceService, Fleet, ServiceHistory
from rollouts.models import Rollout, RolloutDevice, RolloutEvent

from .factories import WEBHOOK_FIXTURES, FleetFactory
from .registry import free_port, unique_name
from .rollout_helpers import T0, minutes, policy, tick

pytestmark = pytest.mark.django_db(transaction=False)

URL = "/api/v1/webhooks/docker-registry"


def dockerhub_push(name: str, tag: str) -> bytes:
    payload = json.loads((WEBHOOK_FIXTURES / "dockerhub-push.json").read_text())
    payload["repository"]["repo_name"] = name
    payload["push_data"]["tag"] = tag
    return json.dumps(payload).encode()


def fleet_on(image: str, tag: str, digest: str | None, count: int) -> list[int]:
    fleet = Fleet.objects.create(slug=f"f-{uuid_lib.uuid4().hex[:8]}", name="F", provisioning_key_hash=uuid_lib.uuid4().hex)
    devices = Device.objects.bulk_create(
        Device(fleet=fleet, name=f"d{i}", api_key_hash=hash_key(uuid_lib.uuid4().hex)) for i in range(count)
    )
    DeviceService.objects.bulk_create(
        DeviceService(device=device, name="web", target_image=image, target_tag=tag, target_digest=digest)
        for device in devices
    )
    return [device.pk for device in devices]


def post_push(client, body: bytes, capture):
    with capture(execute=True):
        response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 202, response.json()
    return response.json()


def event_types(rollout) -> Counter:
    return Counter(rollout.events.values_list("event_type", flat=True))


def test_a_docker_hub_push_of_a_re_pushed_tag_reaches_the_devices_with_the_new_digest(
    client, registry, registry_settings, django_capture_on_commit_callbacks
):
    name = unique_name()
    image = f"docker.io/{name}"
    old = registry.push_image(name, "latest")
    ids = fleet_on(image, "latest", old, 10)
    new = registry.push_image(name, "latest")
    # One device already targets the new digest: nothing to do for it.
    DeviceService.objects.filter(device_id=ids[0]).update(target_digest=new)
    policy("docker.io/acme/*:*", update_strategy="auto")
    body = post_push(client, dockerhub_push(name, "latest"), django_capture_on_commit_callbacks)
    assert body["status"] == "rollout_created"
    rollout = Rollout.objects.get(pk=body["rollout_id"])
    assert (rollout.new_digest, rollout.digest_source, rollout.status) == (new, "registry", "in_progress")
    assert event_types(rollout)["image.digest_resolved"] == 1
    rows = RolloutDevice.objects.filter(rollout=rollout)
    assert Counter(rows.values_list("status", "skip_reason")) == Counter(
        {("scheduled", None): 9, ("skipped", "already_current"): 1}
    )
    targets = DeviceService.objects.filter(device_id__in=ids[1:])
    assert set(targets.values_list("target_tag", "target_digest")) == {("latest", new)}
    history = ServiceHistory.objects.filter(rollout_id=rollout.pk)
    assert set(history.values_list("digest", flat=True)) == {new}


def test_every_batch_gets_the_first_digest_even_when_the_tag_moves(
    client, registry, registry_settings, django_capture_on_commit_callbacks
):
    name = unique_name()
    image = f"docker.io/{name}"
    fleet_on(image, "1.0", None, 10)
    first = registry.push_image(name, "2.0")
    policy("docker.io/acme/*:*", batch_percentages=[50, 100], batch_delay_minutes=0)
    body = post_push(client, dockerhub_push(name, "2.0"), django_capture_on_commit_callbacks)
    rollout = Rollout.objects.get(pk=body["rollout_id"])
    moved = registry.push_image(name, "2.0")
    assert moved != first
    batch_one = list(RolloutDevice.objects.filter(rollout=rollout, batch=1).values_list("device_id", flat=True))
    rollout.refresh_from_db()
    DeviceService.objects.filter(device_id__in=batch_one).update(
        reported_image=image, reported_tag="2.0", reported_digest=first,
        reported_status="running", reported_health="healthy", reported_at=rollout.started_at + minutes(1),
    )
    tick(rollout.started_at + minutes(1))
    tick(rollout.started_at + minutes(2))
    scheduled = RolloutDevice.objects.filter(rollout=rollout, batch=2)
    assert set(scheduled.values_list("status", flat=True)) == {"scheduled"}
    services = DeviceService.objects.filter(target_image=image)
    assert set(services.values_list("target_digest", flat=True)) == {first}


def test_an_unreachable_registry_never_holds_the_webhook_and_the_rollout_goes_on_by_tag(
    client, registry_settings, settings, django_capture_on_commit_callbacks
):
    settings.REGISTRY_DOCKER_HUB_HOST = dead = f"127.0.0.1:{free_port()}"
    registry_settings.allow(dead)
    name = unique_name()
    fleet_on(f"docker.io/{name}", "1.0", None, 4)
    policy("docker.io/acme/*:*", update_strategy="auto")
    body = post_push(client, dockerhub_push(name, "2.0"), django_capture_on_commit_callbacks)
    assert body["status"] == "rollout_created"
    rollout = Rollout.objects.get(pk=body["rollout_id"])
    assert (rollout.status, rollout.new_digest, rollout.digest_source) == ("in_progress", None, None)
    unresolved = rollout.events.get(event_type="image.digest_unresolved")
    assert "unreachable" in unresolved.message
    assert RolloutDevice.objects.filter(rollout=rollout, status="scheduled").count() == 4


def test_the_webhook_answer_does_not_ask_the_registry(client, registry_settings, registry_front, queued_tasks):
    front = registry_front()
    registry_settings.allow(front.host)
    name = unique_name()
    fleet_on(f"{front.host}/{name}", "1.0", None, 2)
    policy(f"{front.host}/acme/*:*")
    body = json.dumps({"docker_url": f"{front.host}/{name}", "updated_tags": ["2.0"]}).encode()
    response = client.post(URL, body, content_type="application/json")
    assert (response.status_code, response.json()["status"]) == (202, "rollout_created")
    assert front.requests == []
    assert Rollout.objects.get().new_digest is None


def test_require_digest_waits_for_the_registry_then_proceeds(
    client, registry, registry_settings, settings, django_capture_on_commit_callbacks
):
    live = settings.REGISTRY_DOCKER_HUB_HOST
    settings.REGISTRY_DOCKER_HUB_HOST = dead = f"127.0.0.1:{free_port()}"
    registry_settings.allow(dead)
    name = unique_name()
    ids = fleet_on(f"docker.io/{name}", "1.0", None, 4)
    digest = registry.push_image(name, "2.0")
    policy("docker.io/acme/*:*", update_strategy="auto", require_digest=True)
    body = post_push(client, dockerhub_push(name, "2.0"), django_capture_on_commit_callbacks)
    rollout = Rollout.objects.get(pk=body["rollout_id"])
    assert (rollout.status, rollout.fanned_out_at) == ("pending", None)
    assert rollout.status_reason.startswith("Waiting for the registry:")
    tick(T0)
    tick(T0 + minutes(1))
    rollout.refresh_from_db()
    assert rollout.status == "pending"
    assert event_types(rollout)["image.digest_unresolved"] == 1
    assert Counter(DeviceService.objects.filter(device_id__in=ids).values_list("target_tag", flat=True)) == {"1.0": 4}

    settings.REGISTRY_DOCKER_HUB_HOST = live
    tick(T0 + minutes(2))
    rollout.refresh_from_db()
    assert (rollout.status, rollout.new_digest, rollout.digest_source) == ("in_progress", digest, "registry")
    assert rollout.status_reason == ""
    assert set(DeviceService.objects.filter(device_id__in=ids).values_list("target_digest", flat=True)) == {digest}


def test_a_pending_rollout_waiting_for_its_digest_can_be_cancelled(
    admin_api, registry_settings, settings, django_capture_on_commit_callbacks
):
    settings.REGISTRY_DOCKER_HUB_HOST = dead = f"127.0.0.1:{free_port()}"
    registry_settings.allow(dead)
    name = unique_name()
    fleet_on(f"docker.io/{name}", "1.0", None, 2)
    policy("docker.io/acme/*:*", require_digest=True)
    with django_capture_on_commit_callbacks(execute=True):
        created = admin_api.post("/api/v1/rollouts/", {"image": name, "tag": "2.0"}, format="json").json()
    assert created["status"] == "pending"
    response = admin_api.post(f"/api/v1/rollouts/{created['id']}/cancel")
    assert response.json()["status"] == "cancelled"
    tick(T0)
    assert Rollout.objects.get(pk=created["id"]).status == "cancelled"


def test_a_target_set_without_a_digest_gets_it_from_a_worker(
    admin_api, registry, registry_settings, django_capture_on_commit_callbacks
):
    name = unique_name()
    digest = registry.push_index(name, "3.1")
    fleet = FleetFactory()
    body = {"name": "d", "fleet": fleet.slug, "services": {"web": {"image": f"{registry.host}/{name}", "tag": "3.1"}}}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.post("/api/v1/devices/", body, format="json")
    assert response.status_code == 201, response.json()
    # The answer did not wait: it shows the target as given.
    assert response.json()["services"]["web"]["target"]["digest"] is None
    device = Device.objects.get(uuid=response.json()["uuid"])
    assert device.target_version == 2
    assert DeviceService.objects.get(device=device).target_digest == digest
    (entry,) = ServiceHistory.objects.filter(device=device)
    assert (entry.source, entry.digest) == ("registration", digest)
