"""Rollouts in the states the console shows, on the real engine."""

from datetime import datetime, timedelta

from django.contrib.auth.models import Permission, User
from django.db import transaction

from rollouts.models import Rollout

from .rollout_helpers import batch_device_ids, build_fleet, policy, push, report, tick

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
    build_fleet(devices)
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


VIEWER_PERMISSIONS = (
    "rollouts.view_rollout",
    "rollouts.view_rolloutdevice",
    "rollouts.view_rolloutevent",
    "devices.view_device",
    "devices.view_fleet",
)
