"""The digest sweep (beat task devices.sweep_target_digests): targets set
without a digest whose per-device task gave up get it as soon as the
registry answers, each image:tag asked once, the registry's backoff kept."""

import time
import uuid as uuid_lib

import pytest

from devices import digests
from devices.models import Device, DeviceService, ServiceHistory
from devices.tasks import sweep_target_digests

from .registry import unique_name
from .test_digest_pinning import fleet_on

pytestmark = pytest.mark.django_db


def manifest_requests(front) -> int:
    return sum(1 for _, path, _ in front.requests if "/manifests/" in path)


def versions(ids) -> list[int]:
    return list(Device.objects.filter(pk__in=ids).order_by("pk").values_list("target_version", flat=True))


def test_it_fills_in_targets_the_per_device_task_gave_up_on(registry, registry_front, registry_settings):
    front = registry_front()
    registry_settings.allow(front.host)
    name = unique_name()
    first, second = registry.push_image(name, "3.1"), registry.push_image(name, "3.2")
    image = f"{front.host}/{name}"
    on_first, on_second = fleet_on(image, "3.1", None, 3), fleet_on(image, "3.2", None, 2)
    device = Device.objects.get(pk=on_first[0])
    ServiceHistory.objects.create(
        device=device, service="web", image=image, tag="3.1", source="manual", deployed_at=device.created_at
    )
    before = versions(on_first + on_second)

    assert sweep_target_digests.apply().get() == {"resolved": 2, "failed": 0, "services": 5}

    assert set(DeviceService.objects.filter(device_id__in=on_first).values_list("target_digest", flat=True)) == {first}
    assert set(DeviceService.objects.filter(device_id__in=on_second).values_list("target_digest", flat=True)) == {second}
    # target_version once more, so the devices see the digest.
    assert versions(on_first + on_second) == [v + 1 for v in before]
    assert ServiceHistory.objects.get(device=device).digest == first
    # Each image:tag asked once, however many devices target it.
    assert manifest_requests(front) == 2
    # Nothing left: the next pass asks nothing.
    assert digests.digests_sweep() == {"resolved": 0, "failed": 0, "services": 0}
    assert manifest_requests(front) == 2


def test_it_leaves_a_rollout_s_targets_by_tag_alone(registry, registry_front, registry_settings):
    front = registry_front()
    registry_settings.allow(front.host)
    name = unique_name()
    registry.push_image(name, "3.1")
    image = f"{front.host}/{name}"
    (device_id,) = fleet_on(image, "3.1", None, 1)
    ServiceHistory.objects.create(
        device_id=device_id, service="web", image=image, tag="3.1", source="rollout",
        rollout_id=uuid_lib.uuid4(), deployed_at=Device.objects.get(pk=device_id).created_at,
    )

    assert digests.digests_sweep()["services"] == 0
    assert DeviceService.objects.get(device_id=device_id).target_digest is None
    assert manifest_requests(front) == 0


def test_it_waits_out_a_429_s_retry_after_for_the_whole_registry(registry, registry_front, registry_settings):
    front = registry_front(fail_with=(429, {"Retry-After": "120"}))
    registry_settings.allow(front.host)
    name = unique_name()
    image = f"{front.host}/{name}"
    fleet_on(image, "3.1", None, 1)
    fleet_on(image, "3.2", None, 1)

    assert digests.digests_sweep() == {"resolved": 0, "failed": 2, "services": 0}
    # The second tag of the same registry was not asked after the 429.
    assert manifest_requests(front) == 1
    front.fail_with = None
    # Even with the per-tag waits over, the host's Retry-After holds.
    for key in ("3.1", "3.2"):
        digests.cache.delete(f"registry:sweep:wait:{image}:{key}")
    assert digests.digests_sweep()["resolved"] == 0
    assert manifest_requests(front) == 1


def test_it_backs_off_a_failing_tag_then_fills_it_once_the_registry_answers(
    registry, registry_front, registry_settings, monkeypatch
):
    monkeypatch.setattr(digests, "SWEEP_BACKOFF_SECONDS", 1)
    front = registry_front(fail_with=(503, {}))
    registry_settings.allow(front.host)
    name = unique_name()
    digest = registry.push_image(name, "3.1")
    (device_id,) = fleet_on(f"{front.host}/{name}", "3.1", None, 1)

    assert digests.digests_sweep()["failed"] == 1
    front.fail_with = None
    # Inside the backoff: not asked.
    assert digests.digests_sweep() == {"resolved": 0, "failed": 0, "services": 0}
    assert manifest_requests(front) == 1
    time.sleep(1.2)
    assert digests.digests_sweep() == {"resolved": 1, "failed": 0, "services": 1}
    assert DeviceService.objects.get(device_id=device_id).target_digest == digest


def test_it_completes_a_bounded_number_of_services_per_pass(registry, registry_front, registry_settings):
    front = registry_front()
    registry_settings.allow(front.host)
    name = unique_name()
    registry.push_image(name, "3.1")
    ids = fleet_on(f"{front.host}/{name}", "3.1", None, 5)

    assert digests.digests_sweep(services=3)["services"] == 3
    assert digests.digests_sweep(services=3)["services"] == 2
    assert not DeviceService.objects.filter(device_id__in=ids, target_digest__isnull=True).exists()


def test_beat_runs_the_sweep(settings):
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "devices.sweep_target_digests")
    assert entry["schedule"] == settings.DIGEST_SWEEP_SECONDS
