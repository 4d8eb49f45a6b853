"""Digest pinning: a rollout without a digest has its tag resolved against the
registry before any device is scheduled, so every batch runs the very image
the first one ran.

Runs in the worker (the fan-out task, and each tick for a rollout still
waiting), never in the webhook answer. The registry is asked outside any
transaction: a slow registry must not hold the rollout's row lock.
"""

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from devices.registry import RegistryError, resolve_digest_cached

from ..models import DigestSource, EventType, Rollout, RolloutStatus
from .events import event_record

WAITING_PREFIX = "Waiting for the registry: "


def rollout_resolve_digest(*, rollout_id, now: datetime | None = None) -> bool:
    """Make sure the rollout knows its digest before its fan-out. Returns
    whether the fan-out may go on: False only while `require_digest` holds a
    rollout whose tag does not resolve."""
    now = now or timezone.now()
    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None or not _needs_resolution(rollout):
        return True
    digest, error = None, None
    try:
        digest = resolve_digest_cached(rollout.image, rollout.new_tag)
    except RegistryError as exc:
        error = str(exc)
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().get(pk=rollout_id)
        if not _needs_resolution(rollout):
            return True
        if digest:
            _record_resolved(rollout, digest, now)
            return True
        return _record_unresolved(rollout, error, now)


def _needs_resolution(rollout: Rollout) -> bool:
    return (
        not rollout.new_digest
        and rollout.fanned_out_at is None
        and rollout.status in (RolloutStatus.PENDING, RolloutStatus.IN_PROGRESS)
        and settings.REGISTRY_RESOLVE_DIGESTS
    )


def _record_resolved(rollout: Rollout, digest: str, now: datetime) -> None:
    rollout.new_digest = digest
    rollout.digest_source = DigestSource.REGISTRY
    if rollout.status_reason.startswith(WAITING_PREFIX):
        rollout.status_reason = ""
    rollout.save(update_fields=["new_digest", "digest_source", "status_reason"])
    event_record(
        rollout=rollout,
        event_type=EventType.DIGEST_RESOLVED,
        message=f"{rollout.image}:{rollout.new_tag} is {digest}.",
        now=now,
        data={"digest": digest},
    )


def _record_unresolved(rollout: Rollout, error: str, now: datetime) -> bool:
    if not rollout.require_digest:
        event_record(
            rollout=rollout,
            event_type=EventType.DIGEST_UNRESOLVED,
            message=f"{error} The rollout goes on by tag."[:500],
            now=now,
            data={"error": error, "require_digest": False},
        )
        return True
    reason = (WAITING_PREFIX + error)[:500]
    # Retried every tick: one event per distinct error, not one per tick.
    if rollout.status_reason != reason:
        rollout.status_reason = reason
        rollout.save(update_fields=["status_reason"])
        event_record(
            rollout=rollout,
            event_type=EventType.DIGEST_UNRESOLVED,
            message=f"{error} The rollout waits (require_digest) and retries each tick."[:500],
            now=now,
            data={"error": error, "require_digest": True},
        )
    return False
