"""Building fleets and driving simulated device reports for engine tests."""

import uuid
from datetime import datetime, timedelta

from devices.keys import hash_key
from devices.models import Device, DeviceService, Fleet
from rollouts.models import ImagePolicy, Rollout
from rollouts.services import rollout_create_for_push, rollout_fan_out, rollouts_advance_all

IMAGE = "docker.io/iotistic/myapp"
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=__import__("datetime").timezone.utc)


def build_fleet(count: int, *, fleet: Fleet | None = None, tag: str = "v1.0.0") -> Fleet:
    """`count` devices whose service "web" targets IMAGE:tag, in bulk."""
    fleet = fleet or Fleet.objects.create(slug=f"f-{uuid.uuid4().hex[:8]}", name="F", provisioning_key_hash=uuid.uuid4().hex)
    devices = Device.objects.bulk_create(
        Device(fleet=fleet, name=f"d{i}", api_key_hash=hash_key(uuid.uuid4().hex)) for i in range(count)
    )
    DeviceService.objects.bulk_create(
        DeviceService(device=device, name="web", target_image=IMAGE, target_tag=tag) for device in devices
    )
    return fleet


def policy(**fields) -> ImagePolicy:
    return ImagePolicy.objects.create(image_pattern="docker.io/iotistic/*:*", **fields)


def push(tag: str = "v2.0.0", digest: str | None = None, now: datetime = T0) -> Rollout:
    """Push as a webhook would and run the fan-out as the worker would."""
    outcome = rollout_create_for_push(image=IMAGE, tag=tag, digest=digest, now=now)
    assert outcome.status == "rollout_created", outcome.status
    rollout_fan_out(rollout_id=outcome.rollout.pk, now=now)
    outcome.rollout.refresh_from_db()
    return outcome.rollout


def report(device_ids, *, tag: str, status: str = "running", health: str = "healthy", at: datetime) -> int:
    """Devices report running IMAGE:tag with the given health (in bulk)."""
    return DeviceService.objects.filter(device_id__in=list(device_ids), name="web").update(
        reported_image=IMAGE, reported_tag=tag, reported_status=status, reported_health=health, reported_at=at
    )


def scheduled_device_ids(rollout: Rollout) -> list[int]:
    return list(rollout.devices.filter(status="scheduled").values_list("device_id", flat=True))


def tick(now: datetime) -> None:
    rollouts_advance_all(now=now)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
