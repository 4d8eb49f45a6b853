"""Building fleets and driving simulated device reports for engine tests.

Everything is bulk SQL so that fleets of thousands stay fast, and every
function that depends on time takes the virtual `now` explicitly.
"""

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from devices.keys import hash_key
from devices.models import Device, DeviceService, Fleet
from devices.references import normalize_image_pattern
from rollouts.models import ImagePolicy, Rollout, RolloutDevice
from rollouts.services import rollout_create_for_push, rollout_fan_out, rollouts_advance_all

IMAGE = "docker.io/iotistic/myapp"
# A Monday, in winter (Europe/Berlin is UTC+1).
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def build_fleet(count: int, *, fleet: Fleet | None = None, tag: str = "v1.0.0") -> Fleet:
    """`count` devices whose service "web" targets IMAGE:tag, in bulk."""
    fleet = fleet or Fleet.objects.create(
        slug=f"f-{uuid.uuid4().hex[:8]}", name="F", provisioning_key_hash=uuid.uuid4().hex
    )
    devices = Device.objects.bulk_create(
        Device(fleet=fleet, name=f"d{i}", api_key_hash=hash_key(uuid.uuid4().hex))
        for i in range(count)
    )
    DeviceService.objects.bulk_create(
        DeviceService(device=device, name="web", target_image=IMAGE, target_tag=tag)
        for device in devices
    )
    return fleet


def policy(pattern: str = "docker.io/iotistic/*:*", **fields) -> ImagePolicy:
    """A policy stored as the API stores it: with a normalized pattern.

    Its batches are released whole (`ramp_initial: None`) unless the test
    says otherwise: most engine tests are about batches, thresholds and
    rollbacks; the ramp, a fresh policy's default, has tests of its own."""
    fields.setdefault("ramp_initial", None)
    return ImagePolicy.objects.create(image_pattern=normalize_image_pattern(pattern), **fields)


def push(tag: str = "v2.0.0", digest: str | None = None, now: datetime = T0) -> Rollout:
    """Push as a webhook would and run the fan-out as the worker would."""
    outcome = rollout_create_for_push(image=IMAGE, tag=tag, digest=digest, now=now)
    assert outcome.status == "rollout_created", outcome.status
    rollout_fan_out(rollout_id=outcome.rollout.pk, now=now)
    outcome.rollout.refresh_from_db()
    return outcome.rollout


def create_rollout(tag: str = "v2.0.0", now: datetime = T0) -> Rollout:
    """The `pending` rollout of a push, before its fan-out task has run (in a
    `django_db` test the on-commit enqueue never fires)."""
    outcome = rollout_create_for_push(image=IMAGE, tag=tag, digest=None, now=now)
    assert outcome.status == "rollout_created", outcome.status
    return outcome.rollout


def report(
    device_ids,
    *,
    tag: str,
    status: str = "running",
    health: str = "healthy",
    digest: str | None = None,
    at: datetime,
    towards: int | None = None,
) -> int:
    """Devices report running IMAGE:tag with the given health (in bulk), as
    the report endpoint writes it: a report is also a sign of life, and says
    which target_version the agent works `towards` (if given)."""
    device_ids = list(device_ids)
    seen = {"last_report_at": at, "last_seen_at": at}
    if towards is not None:
        seen["reported_target_version"] = towards
    Device.objects.filter(pk__in=device_ids).update(**seen)
    return DeviceService.objects.filter(device_id__in=device_ids, name="web").update(
        reported_image=IMAGE,
        reported_tag=tag,
        reported_digest=digest,
        reported_status=status,
        reported_health=health,
        reported_at=at,
    )


def scheduled_device_ids(rollout: Rollout) -> list[int]:
    return list(rollout.devices.filter(status="scheduled").values_list("device_id", flat=True))


def batch_device_ids(rollout: Rollout, batch: int) -> list[int]:
    rows = rollout.devices.filter(batch=batch).order_by("device_id")
    return list(rows.values_list("device_id", flat=True))


def statuses(rollout: Rollout, **filters) -> Counter:
    """Rows of the rollout per (status, failure_reason)."""
    rows = RolloutDevice.objects.filter(rollout=rollout, **filters)
    return Counter(rows.values_list("status", "failure_reason"))


def event_counts(rollout: Rollout) -> Counter:
    """The rollout's events per type, without the `image.` prefix."""
    types = rollout.events.values_list("event_type", flat=True)
    return Counter(event_type.removeprefix("image.") for event_type in types)


def target_versions(device_ids=None) -> Counter:
    devices = Device.objects.all()
    if device_ids is not None:
        devices = devices.filter(pk__in=list(device_ids))
    return Counter(devices.values_list("target_version", flat=True))


def target_tags(device_ids=None) -> Counter:
    services = DeviceService.objects.filter(name="web")
    if device_ids is not None:
        services = services.filter(device_id__in=list(device_ids))
    return Counter(services.values_list("target_tag", flat=True))


def tick(now: datetime) -> int:
    """One engine pass, as the beat task runs it."""
    return rollouts_advance_all(now=now)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)
