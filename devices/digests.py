"""Digests for targets an operator set by tag: filled in by a worker as soon
as the registry answers, never while the operator's request waits."""

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F

from .history import history_fill_digest
from .models import Device, DeviceService
from .registry import RegistryError, resolve_digest_cached

logger = logging.getLogger(__name__)

# The name of the task in devices.tasks that runs `device_fill_target_digests`.
FILL_DIGESTS_TASK = "devices.fill_target_digests"


def services_without_digest(device_id: int):
    return DeviceService.objects.filter(
        device_id=device_id, target_image__isnull=False, target_tag__isnull=False,
        target_digest__isnull=True,
    )


def enqueue_fill_target_digests(device_id: int) -> None:
    """After commit, when the device has a target without a digest."""
    if not settings.REGISTRY_RESOLVE_DIGESTS:
        return
    # Function level: the tasks module imports this one.
    from .tasks import fill_target_digests

    def enqueue():
        if services_without_digest(device_id).exists():
            fill_target_digests.delay(device_id)

    transaction.on_commit(enqueue)


def device_fill_target_digests(*, device_id: int) -> list[str]:
    """Resolve every target of the device that names a tag without a digest.
    Returns the errors of those that did not resolve (the task retries)."""
    errors, resolved = [], {}
    for service in services_without_digest(device_id):
        try:
            resolved[service.pk] = (service, resolve_digest_cached(service.target_image, service.target_tag))
        except RegistryError as exc:
            errors.append(f"{service.name}: {exc}")
    if resolved:
        _store(device_id, resolved.values())
    return errors


@transaction.atomic
def _store(device_id: int, resolved) -> None:
    changed = 0
    for service, digest in sorted(resolved, key=lambda pair: pair[0].name):
        # Compare-and-set: the target may have changed while the registry
        # was asked; then this digest is not its digest.
        changed += DeviceService.objects.filter(
            pk=service.pk,
            target_image=service.target_image,
            target_tag=service.target_tag,
            target_digest__isnull=True,
        ).update(target_digest=digest)
        history_fill_digest(service=service, digest=digest)
    if changed:
        Device.objects.filter(pk=device_id).update(target_version=F("target_version") + 1)
