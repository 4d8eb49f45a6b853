"""Digests for targets an operator set by tag: filled in by a worker as soon
as the registry answers, never while the operator's request waits."""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef

from .history import history_fill_digest
from .models import Device, DeviceService, HistorySource, ServiceHistory
from .registry import RegistryError, resolve_digest_cached

logger = logging.getLogger(__name__)

# The name of the task in devices.tasks that runs `device_fill_target_digests`.
FILL_DIGESTS_TASK = "devices.fill_target_digests"

# The sweep (beat, every DIGEST_SWEEP_SECONDS) asks the registry for at most
# this many distinct image:tag per pass: each is one round trip, at worst
# REGISTRY_TIMEOUT_SECONDS (10 s), so a pass stays within a few minutes even
# with the registry hanging.
SWEEP_TAGS = 20
# ... and completes at most this many services per image:tag per pass (one
# short transaction each; a larger backlog takes the next passes).
SWEEP_SERVICES = 1000
# After a failed resolution an image:tag waits 1, 2, 4, ... minutes (at most
# an hour) before a pass asks again; a 429 also holds its whole host back for
# the Retry-After (resolve_digest_cached).
SWEEP_BACKOFF_SECONDS, SWEEP_BACKOFF_MAX_SECONDS = 60, 3600


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


def sweepable_services():
    """Targets set without a digest by anyone but a rollout (an operator, a
    registration, a rollback): the digest the per-device task could not
    fill, e.g. while the registry was down longer than its retries. A
    rollout that went on by tag keeps its targets as the rollout set them."""
    by_rollout = ServiceHistory.objects.filter(
        device_id=OuterRef("device_id"), service=OuterRef("name"), replaced_at__isnull=True,
        source=HistorySource.ROLLOUT,
    )
    return DeviceService.objects.filter(
        target_image__isnull=False, target_tag__isnull=False, target_digest__isnull=True
    ).exclude(Exists(by_rollout))


def digests_sweep(*, tags: int = SWEEP_TAGS, services: int = SWEEP_SERVICES) -> dict[str, int]:
    """One pass: resolve each distinct image:tag of the sweepable targets once
    (through the cached client, so a 429's Retry-After holds) and fill in
    its services. Returns {"resolved": tags, "failed": tags, "services": n}."""
    result = {"resolved": 0, "failed": 0, "services": 0}
    if not settings.REGISTRY_RESOLVE_DIGESTS:
        return result
    # In random order: a few tags that keep failing cannot starve the rest.
    pairs = list(
        sweepable_services().values_list("target_image", "target_tag").annotate(n=Count("id")).order_by("?")
    )
    asked = 0
    for image, tag, _ in pairs:
        if asked >= tags:
            break
        wait_key = f"registry:sweep:wait:{image}:{tag}"
        if cache.get(wait_key):
            continue
        asked += 1
        try:
            digest = resolve_digest_cached(image, tag)
        except RegistryError as exc:
            result["failed"] += 1
            failures_key = f"registry:sweep:failures:{image}:{tag}"
            failures = (cache.get(failures_key) or 0) + 1
            cache.set(failures_key, failures, 24 * 3600)
            cache.set(wait_key, 1, min(SWEEP_BACKOFF_SECONDS * 2 ** (failures - 1), SWEEP_BACKOFF_MAX_SECONDS))
            logger.info("Digest of %s:%s not resolved: %s", image, tag, exc)
            continue
        cache.delete(f"registry:sweep:failures:{image}:{tag}")
        result["resolved"] += 1
        result["services"] += _fill(image, tag, digest, limit=services)
    return result


@transaction.atomic
def _fill(image: str, tag: str, digest: str, *, limit: int) -> int:
    # Rows another transaction holds (an operator's deployment, the engine)
    # are left for the next pass rather than waited for; locked in id order,
    # then their devices in id order, as _store does per device.
    rows = list(
        sweepable_services()
        .filter(target_image=image, target_tag=tag)
        .order_by("id")
        .select_for_update(skip_locked=True, of=("self",))
        .values_list("id", "device_id", "name")[:limit]
    )
    if not rows:
        return 0
    DeviceService.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(target_digest=digest)
    by_name: dict[str, list[int]] = {}
    for _, device_id, name in rows:
        by_name.setdefault(name, []).append(device_id)
    for name, device_ids in by_name.items():
        ServiceHistory.objects.filter(
            device_id__in=device_ids, service=name, replaced_at__isnull=True,
            image=image, tag=tag, digest__isnull=True,
        ).update(digest=digest)
    device_ids = sorted({device_id for _, device_id, _ in rows})
    list(Device.objects.filter(pk__in=device_ids).order_by("pk").select_for_update().values_list("pk"))
    Device.objects.filter(pk__in=device_ids).update(target_version=F("target_version") + 1)
    return len(rows)
