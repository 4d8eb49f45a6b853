"""Rollouts in the states the console shows, on the real engine."""

import uuid

from datetime import datetime, timedelta

from django.contrib.auth.models import Permission, User
from django.db import transaction

from devices.models import Device, DeviceService, Fleet, FleetMembership
from rollouts.models import Rollout

from .rollout_helpers import IMAGE, batch_device_ids, build_fleet, policy, push, report, tick

PASSWORD = "console-test-password"


def rollout_in_progress(devices: int, now: datetime, *, failed: int = 0) -> Rollout:
    """A staged rollout (10/50/100 %) whose first batch is done and whose
    second batch runs: half of it healthy, `failed` of it crashed.

    Built in one transaction, so that the fan-out task a push enqueues on
    commit (at the real time) finds the work done on the virtual clock.
    """
    with transaction.atomic():
        return _rollout_in_progress(devices, now, failed)


def _rollout_in_progress(devices: int, now: datetime, failed: int) -> Rollout:
    fleet = Fleet.objects.create(
        slug=f"edge-{uuid.uuid4().hex[:6]}", name="Edge gateways", provisioning_key_hash=uuid.uuid4().hex
    )
    build_fleet(devices, fleet=fleet)
    policy(
        batch_percentages=[10, 50, 100],
        batch_delay_minutes=0,
        min_failure_samples=1000,
        health_check_timeout_seconds=3600,
    )
    start = now - timedelta(minutes=20)
    rollout = push(now=start)
    tick(start)
    first = batch_device_ids(rollout, 1)
    report(first, tag="v2.0.0", at=start + timedelta(minutes=2))
    tick(start + timedelta(minutes=3))
    tick(start + timedelta(minutes=4))
    second = batch_device_ids(rollout, 2)
    healthy = second[: len(second) // 2]
    crashed = second[len(second) // 2 : len(second) // 2 + failed]
    report(healthy, tag="v2.0.0", at=start + timedelta(minutes=8))
    report(crashed, tag="v2.0.0", status="exited", health="none", at=start + timedelta(minutes=8))
    tick(start + timedelta(minutes=9))
    rollout.refresh_from_db()
    return rollout


def user_with(username: str, *codenames: str, superuser: bool = False) -> User:
    """A staff user with the given rollouts/devices permissions (`app.codename`)."""
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    for perm in codenames:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def member_of(fleet, role: str, username: str) -> User:
    """A staff user with no model permission, `role` in `fleet` only."""
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    FleetMembership.objects.create(user=user, fleet=fleet, role=role)
    return user


VIEWER_PERMISSIONS = (
    "rollouts.view_rollout",
    "rollouts.view_rolloutdevice",
    "rollouts.view_rolloutevent",
    "devices.view_device",
    "devices.view_deviceservice",
    "devices.view_fleet",
)


def liven_up(fleet_devices, now: datetime, *, tags=("16", "16", "16", "15")) -> None:
    """Make a test fleet look like a real one: most devices polled lately, the
    ones no rollout reached yet report the version they run, and a second image
    ("db", postgres) runs on a mix of versions."""
    fleet_devices = list(fleet_devices)
    Device.objects.filter(pk__in=[device.pk for device in fleet_devices[1:]]).update(last_seen_at=now)
    DeviceService.objects.filter(name="web", reported_image__isnull=True, target_tag="v1.0.0").update(
        reported_image=IMAGE, reported_tag="v1.0.0", reported_status="running", reported_health="healthy"
    )
    DeviceService.objects.bulk_create(
        DeviceService(
            device=device,
            name="db",
            target_image="docker.io/library/postgres",
            target_tag=tags[index % len(tags)],
            reported_image="docker.io/library/postgres",
            reported_tag=tags[index % len(tags)],
            reported_status="running",
            reported_health="healthy",
        )
        for index, device in enumerate(fleet_devices)
    )
