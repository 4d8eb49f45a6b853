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
from ..versions import parse_tag
from .events import event_record

WAITING_PREFIX = "Waiting for the registry: "


def rollout_resolve_digest(*, rollout_id, now: datetime | None = None) -> bool:
    """Make sure the rollout knows its digest before its fan-out. Returns
    whether the fan-out may go on: False only while `require_digest` holds a
    rollout whose tag does not resolve."""
    now = now or timezone.now()
    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None:
        return True
    if not _stones_resolved(rollout, now):
        return False
    if not _needs_resolution(rollout):
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


def _stones_resolved(rollout: Rollout, now: datetime) -> bool:
    """Stepping stones are pinned to a digest like every target: resolved
    once, before the fan-out. A stone the registry cannot resolve goes by
    tag (recorded as null), unless require_digest holds the rollout."""
    pushed = parse_tag(rollout.new_tag)
    stones = [
        tag
        for tag in rollout.required_versions
        if tag not in rollout.via_digests
        and pushed is not None
        and (stone := parse_tag(tag)) is not None
        and stone.version < pushed.version
    ]
    if not stones or not settings.REGISTRY_RESOLVE_DIGESTS or rollout.fanned_out_at is not None:
        return True
    resolved, errors = {}, {}
    for tag in stones:
        try:
            resolved[tag] = resolve_digest_cached(rollout.image, tag)
        except RegistryError as exc:
            errors[tag] = str(exc)
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().get(pk=rollout.pk)
        if rollout.fanned_out_at is not None:
            return True
        for tag, digest in resolved.items():
            event_record(
                rollout=rollout,
                event_type=EventType.DIGEST_RESOLVED,
                message=f"Stepping stone {rollout.image}:{tag} is {digest}.",
                now=now,
                data={"digest": digest, "stepping_stone": tag},
            )
        waiting = bool(errors) and rollout.require_digest
        reason = (WAITING_PREFIX + "; ".join(f"{tag}: {error}" for tag, error in errors.items()))[:500]
        # Retried every tick while require_digest waits: one event per
        # distinct error, not one per tick.
        if errors and not (waiting and rollout.status_reason == reason):
            for tag, error in errors.items():
                event_record(
                    rollout=rollout,
                    event_type=EventType.DIGEST_UNRESOLVED,
                    message=f"Stepping stone {tag}: {error}"[:500],
                    now=now,
                    data={"error": error, "stepping_stone": tag, "require_digest": rollout.require_digest},
                )
        if waiting:
            rollout.status_reason = reason
        elif rollout.status_reason.startswith(WAITING_PREFIX):
            rollout.status_reason = ""
        rollout.save(update_fields=["status_reason"])
        rollout.via_digests = {
            **rollout.via_digests,
            **resolved,
            # Known not to resolve: by tag, unless require_digest waits for it.
            **({} if waiting else dict.fromkeys(errors)),
        }
        rollout.save(update_fields=["via_digests"])
    return not waiting


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
