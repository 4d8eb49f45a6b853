"""What the beat task and the fan-out task run: orchestration on top of the
engine (judging and scheduling) and the fan-out (filling a rollout).

The top of the services package: nothing in it imports this module.
"""

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ..models import IN_FLIGHT, DeviceStatus, Rollout, RolloutDevice, RolloutStatus
from .digests import rollout_resolve_digest
from .engine import rollout_advance_locked
from .fanout import fan_out_locked

logger = logging.getLogger(__name__)


def rollouts_advance_all(*, now: datetime | None = None) -> int:
    """One pass of the engine over every active rollout (the beat task and
    `manage.py advance_rollouts`). Returns how many rollouts it advanced."""
    now = now or timezone.now()
    # Pending rollouts without devices are here too: if their fan-out task
    # was lost (worker down, broker flushed), the tick does the fan-out.
    candidates = Rollout.objects.filter(
        Q(status=RolloutStatus.IN_PROGRESS)
        | Q(status__in=[RolloutStatus.PENDING], fanned_out_at__isnull=True)
    ).values_list("pk", "fanned_out_at")
    # Completed rollouts with a device in flight, or a deferred one that has
    # polled again (read from the partial index of watched rows, not from
    # every rollout): a device that stays offline costs no tick anything.
    watched = Rollout.objects.filter(
        status=RolloutStatus.COMPLETED,
        pk__in=RolloutDevice.objects.filter(
            Q(status__in=IN_FLIGHT) | Q(status=DeviceStatus.DEFERRED, device__last_seen_at__gte=F("scheduled_at"))
            | Q(status=DeviceStatus.DEFERRED, device__last_report_at__gte=F("scheduled_at"))
        ).values("rollout_id"),
    ).values_list("pk", "fanned_out_at")
    advanced = 0
    for rollout_id, fanned_out_at in [*candidates, *watched]:
        try:
            # Before the fan-out, the digest: a rollout that require_digest
            # holds waits for the registry, retried here every tick.
            if fanned_out_at is None and not rollout_resolve_digest(rollout_id=rollout_id, now=now):
                continue
            advanced += _advance_one(rollout_id, now)
        except Exception:
            # One broken rollout (or a deadlock with another writer) must not
            # stall every other rollout: its transaction is rolled back, the
            # next tick tries it again, and the log says why.
            logger.exception("advancing rollout %s failed", rollout_id)
    return advanced


def _advance_one(rollout_id, now: datetime) -> int:
    with transaction.atomic():
        # skip_locked: another tick (or an operator action) holds this
        # rollout right now; it will be looked at again next tick.
        rollout = Rollout.objects.select_for_update(skip_locked=True).filter(pk=rollout_id).first()
        if rollout is None:
            return 0
        if rollout.fanned_out_at is None:
            if rollout.status not in (RolloutStatus.PENDING, RolloutStatus.IN_PROGRESS):
                return 0
            fan_out_locked(rollout, now)
        rollout_advance_locked(rollout, now)
        return 1


def rollout_fan_out(*, rollout_id, now: datetime | None = None) -> None:
    """Assign the rollout's devices to batches. Idempotent: a second call, or
    the tick catching a lost task, finds the rollout already filled."""
    now = now or timezone.now()
    if not rollout_resolve_digest(rollout_id=rollout_id, now=now):
        return
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().filter(pk=rollout_id).first()
        if rollout is None or rollout.fanned_out_at is not None:
            return
        if rollout.status not in (RolloutStatus.PENDING, RolloutStatus.IN_PROGRESS):
            return
        fan_out_locked(rollout, now)
        rollout_advance_locked(rollout, now)
