"""The load run's devices, written directly in the database with known keys."""

from __future__ import annotations

import uuid as uuid_lib

from django.db import transaction
from django.utils import timezone

from devices.keys import hash_key, new_key
from devices.models import Device, DeviceService, Fleet
from devices.services import fleet_create

from .model import DEFAULT_IMAGE, DEFAULT_TAG, AgentIdentity


def create_devices(
    count: int, *, image: str = DEFAULT_IMAGE, tag: str = DEFAULT_TAG
) -> tuple[Fleet, list[AgentIdentity]]:
    """A new fleet of `count` devices whose service `web` targets image:tag,
    written in bulk; returns the fleet and the agents' identities."""
    now = timezone.now()
    keys = [new_key() for _ in range(count)]
    with transaction.atomic():
        fleet, _ = fleet_create(slug=f"loadtest-{uuid_lib.uuid4().hex[:12]}", name="Load test")
        devices = Device.objects.bulk_create(
            Device(fleet=fleet, name=f"loadtest-{i}", api_key_hash=hash_key(key))
            for i, key in enumerate(keys)
        )
        DeviceService.objects.bulk_create(
            DeviceService(
                device=device, name="web", target_image=image, target_tag=tag, target_changed_at=now
            )
            for device in devices
        )
    identities = [
        AgentIdentity(uuid=str(device.uuid), api_key=key, image=image, tag=tag)
        for device, key in zip(devices, keys, strict=True)
    ]
    return fleet, identities


def delete_devices(fleet: Fleet) -> None:
    with transaction.atomic():
        Device.objects.filter(fleet=fleet).delete()
        fleet.delete()
