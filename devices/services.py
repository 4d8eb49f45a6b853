"""Everything that changes fleets and devices.

The rollout engine changes device targets in bulk with its own set-based SQL;
the functions here are for one device at a time (API, agent endpoints).
"""

import uuid as uuid_lib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .keys import hash_key, new_key
from .models import (
    Device,
    DeviceService,
    DeviceTag,
    Fleet,
    FleetAuditAction,
    FleetAuditEvent,
    FleetMembership,
)


@dataclass(frozen=True)
class ServiceTarget:
    """What a service should run; `image` is a normalized repository."""

    image: str
    tag: str
    digest: str | None = None


# What an agent may say about a service: {"image", "tag", "digest", "status",
# "health"}, only the keys it sent, `image` normalized.
ServiceReport = dict[str, str | None]


class DeviceAlreadyExists(Exception):
    pass


class FleetNotEmpty(Exception):
    pass


def fleet_create(*, slug: str, name: str) -> tuple[Fleet, str]:
    """Create a fleet; returns it with its provisioning key (shown once)."""
    key = new_key()
    fleet = Fleet.objects.create(slug=slug, name=name, provisioning_key_hash=hash_key(key))
    return fleet, key


@transaction.atomic
def fleet_rotate_key(*, fleet: Fleet, actor: str, now: datetime | None = None) -> str:
    """A new provisioning key (returned, shown once). Registration looks the
    key's hash up on every request, so the old key stops working at once."""
    key = new_key()
    Fleet.objects.filter(pk=fleet.pk).update(provisioning_key_hash=hash_key(key))
    _audit(fleet=fleet, action=FleetAuditAction.KEY_ROTATED, actor=actor, now=now)
    return key


class MembershipExists(Exception):
    pass


@transaction.atomic
def membership_add(
    *, fleet: Fleet, user, role: str, actor: str, now: datetime | None = None
) -> FleetMembership:
    try:
        # A savepoint: a duplicate leaves the outer transaction usable.
        with transaction.atomic():
            membership = FleetMembership.objects.create(fleet=fleet, user=user, role=role)
    except IntegrityError as exc:
        raise MembershipExists(
            f"{user.get_username()!r} is already a member of {fleet.slug!r}."
        ) from exc
    _audit(
        fleet=fleet,
        action=FleetAuditAction.MEMBER_ADDED,
        actor=actor,
        subject=user.get_username(),
        data={"role": role},
        now=now,
    )
    return membership


@transaction.atomic
def membership_change_role(
    *, membership: FleetMembership, role: str, actor: str, now: datetime | None = None
) -> FleetMembership:
    old_role = membership.role
    if role == old_role:
        return membership
    membership.role = role
    membership.save(update_fields=["role"])
    _audit(
        fleet=membership.fleet,
        action=FleetAuditAction.MEMBER_CHANGED,
        actor=actor,
        subject=membership.user.get_username(),
        data={"role": role, "previous_role": old_role},
        now=now,
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: FleetMembership, actor: str, now: datetime | None = None) -> None:
    _audit(
        fleet=membership.fleet,
        action=FleetAuditAction.MEMBER_REMOVED,
        actor=actor,
        subject=membership.user.get_username(),
        data={"previous_role": membership.role},
        now=now,
    )
    membership.delete()


def _audit(
    *,
    fleet: Fleet,
    action: str,
    actor: str,
    subject: str = "",
    data: dict | None = None,
    now: datetime | None = None,
) -> FleetAuditEvent:
    return FleetAuditEvent.objects.create(
        fleet=fleet,
        fleet_slug=fleet.slug,
        action=action,
        actor=actor,
        subject=subject,
        data=data or {},
        timestamp=now or timezone.now(),
    )


def fleet_delete(*, fleet: Fleet) -> None:
    if fleet.devices.exists():
        raise FleetNotEmpty(f"Fleet {fleet.slug!r} still has devices; delete or move them first.")
    fleet.delete()


@transaction.atomic
def device_create(
    *,
    fleet: Fleet,
    uuid: uuid_lib.UUID | None = None,
    name: str = "",
    tags: list[str] | tuple[str, ...] = (),
    targets: dict[str, ServiceTarget] | None = None,
    now: datetime | None = None,
) -> tuple[Device, str]:
    """Create a device; returns it with its api key (shown once)."""
    now = now or timezone.now()
    key = new_key()
    try:
        # A savepoint, so a duplicate uuid leaves the outer transaction usable.
        with transaction.atomic():
            device = Device.objects.create(
                uuid=uuid or uuid_lib.uuid4(), name=name, fleet=fleet, api_key_hash=hash_key(key)
            )
    except IntegrityError as exc:
        raise DeviceAlreadyExists(f"A device with uuid {uuid} already exists.") from exc
    DeviceTag.objects.bulk_create(DeviceTag(device=device, name=tag) for tag in set(tags))
    DeviceService.objects.bulk_create(
        DeviceService(
            device=device,
            name=service,
            target_image=target.image,
            target_tag=target.tag,
            target_digest=target.digest,
            target_changed_at=now,
        )
        for service, target in (targets or {}).items()
    )
    return device, key


@transaction.atomic
def device_update(
    *,
    device: Device,
    name: str | None = None,
    tags: list[str] | None = None,
    targets: dict[str, ServiceTarget] | None = None,
    now: datetime | None = None,
) -> Device:
    # Targets first: every writer locks a device's services before its device
    # row (the engine, reports, this), so none of them can deadlock another.
    if targets:
        device_set_targets(device_id=device.pk, targets=targets, now=now)
        device.refresh_from_db(fields=["target_version"])
    if tags is not None:
        device_set_tags(device=device, tags=tags)
    if name is not None and name != device.name:
        device.name = name
        device.save(update_fields=["name"])
    return device


def device_set_tags(*, device: Device, tags: list[str]) -> None:
    wanted = set(tags)
    device.tag_set.exclude(name__in=wanted).delete()
    DeviceTag.objects.bulk_create(
        (DeviceTag(device=device, name=tag) for tag in wanted), ignore_conflicts=True
    )


@transaction.atomic
def device_set_targets(
    *, device_id: int, targets: dict[str, ServiceTarget], now: datetime | None = None
) -> None:
    """A manual deployment: the named services get a new target, the old one
    becomes the previous one, and `target_version` grows once."""
    now = now or timezone.now()
    # Rows first (a report may have created some already), so that every
    # target change below is one UPDATE that keeps the old target as previous.
    DeviceService.objects.bulk_create(
        (DeviceService(device_id=device_id, name=service) for service in sorted(targets)),
        ignore_conflicts=True,
    )
    # In name order, like reports: two writers locking the same services in
    # different orders would deadlock.
    for service, target in sorted(targets.items()):
        DeviceService.objects.filter(device_id=device_id, name=service).update(
            previous_image=F("target_image"),
            previous_tag=F("target_tag"),
            previous_digest=F("target_digest"),
            target_image=target.image,
            target_tag=target.tag,
            target_digest=target.digest,
            target_rollout_id=None,
            target_changed_at=now,
        )
    Device.objects.filter(pk=device_id).update(target_version=F("target_version") + 1)


def device_record_poll(
    *, device_id: int, last_seen_at: datetime | None, now: datetime | None = None
) -> bool:
    """Note that the device polled, at most once per poll interval.

    Writing on every poll would turn the cheapest request into a row write;
    `online` only needs a resolution of one poll interval. Returns whether a
    write happened.
    """
    now = now or timezone.now()
    interval = timedelta(seconds=settings.DEVICE_POLL_INTERVAL_SECONDS)
    if last_seen_at is not None and now - last_seen_at < interval:
        return False
    Device.objects.filter(pk=device_id).update(last_seen_at=now)
    return True


def _forget_stale_health(report: ServiceReport) -> ServiceReport:
    """A report that names what runs (image, tag or digest) describes the
    container afresh: status or health it leaves out are unknown, not the
    stored ones. Otherwise a new release would inherit the old container's
    health, and the engine would judge it by that."""
    if not report.keys() & {"image", "tag", "digest"}:
        return report
    return {"status": None, "health": None, **report}


@transaction.atomic
def device_report_state(
    *,
    device_id: int,
    target_version: int | None,
    services: dict[str, ServiceReport],
    now: datetime | None = None,
) -> None:
    """Store what the agent runs. The engine judges it later, in bulk.

    A field a report leaves out keeps its stored value (an explicit null
    clears it), so a partial report never erases what an earlier one said.
    """
    now = now or timezone.now()
    by_fields: dict[tuple[str, ...], dict[str, ServiceReport]] = defaultdict(dict)
    # Services in name order (see device_set_targets), each group likewise.
    for service, report in sorted(services.items()):
        report = _forget_stale_health(report)
        by_fields[tuple(sorted(report))][service] = report
    # One INSERT .. ON CONFLICT per shape of report (agents send one shape):
    # a report for a service we never targeted is kept too.
    for fields, reports in by_fields.items():
        columns = [f"reported_{field}" for field in fields]
        DeviceService.objects.bulk_create(
            (
                DeviceService(
                    device_id=device_id,
                    name=service,
                    reported_at=now,
                    **{f"reported_{field}": value for field, value in report.items()},
                )
                for service, report in reports.items()
            ),
            update_conflicts=True,
            unique_fields=["device", "name"],
            update_fields=[*columns, "reported_at"],
        )
    device_fields = {"last_report_at": now, "last_seen_at": now}
    if target_version is not None:
        device_fields["reported_target_version"] = target_version
    Device.objects.filter(pk=device_id).update(**device_fields)
