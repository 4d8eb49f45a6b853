"""Operator actions: start, pause, resume, cancel, roll back all, approve,
reject, retry.

Each takes the rollout's row lock for its transaction, so it never interleaves
with a tick. Repeating an action that already happened is harmless (200);
an action the current status forbids raises InvalidTransition (409).
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ..models import DeviceStatus, EventType, Rollout, RolloutStatus, UpdateStrategy
from .engine import resend_devices, roll_back_devices, rollout_advance_locked
from .events import event_record
from .transitions import set_status, start_locked


class InvalidTransition(Exception):
    def __init__(self, rollout: Rollout, action: str):
        super().__init__(f"Cannot {action} a rollout that is {rollout.status}.")


def _locked(rollout_id) -> Rollout:
    return Rollout.objects.select_for_update().get(pk=rollout_id)


@transaction.atomic
def rollout_start(*, rollout_id, actor: str, now: datetime | None = None) -> Rollout:
    now = now or timezone.now()
    rollout = _locked(rollout_id)
    if rollout.status == RolloutStatus.IN_PROGRESS:
        return rollout
    if rollout.status != RolloutStatus.PENDING:
        raise InvalidTransition(rollout, "start")
    start_locked(rollout, now, actor)
    rollout_advance_locked(rollout, now)
    return rollout


@transaction.atomic
def rollout_approve(*, rollout_id, actor: str, now: datetime | None = None) -> Rollout:
    """Let a rollout that waits for approval go on as its strategy says:
    manual to `pending` (it still waits for `start`), the others start."""
    now = now or timezone.now()
    rollout = _locked(rollout_id)
    if rollout.status != RolloutStatus.AWAITING_APPROVAL:
        raise InvalidTransition(rollout, "approve")
    set_status(rollout, RolloutStatus.PENDING, approved_by=actor, approved_at=now)
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_APPROVED,
        message=f"Approved by {actor} (risk {rollout.risk}).",
        now=now,
        data={"actor": actor, "risk": rollout.risk},
    )
    if rollout.strategy != UpdateStrategy.MANUAL:
        start_locked(rollout, now, actor)
        rollout_advance_locked(rollout, now)
    return rollout


@transaction.atomic
def rollout_reject(*, rollout_id, actor: str, now: datetime | None = None) -> Rollout:
    """End a rollout that waits for approval: no device was touched."""
    now = now or timezone.now()
    rollout = _locked(rollout_id)
    if rollout.status != RolloutStatus.AWAITING_APPROVAL:
        raise InvalidTransition(rollout, "reject")
    _end_before_reaching_the_rest(
        rollout, RolloutStatus.REJECTED, EventType.ROLLOUT_REJECTED, f"Rejected by {actor}.", now,
        data={"actor": actor, "risk": rollout.risk},
    )
    return rollout


def _end_before_reaching_the_rest(
    rollout: Rollout, status: str, event_type: str, reason: str, now: datetime, *, data: dict
) -> None:
    """Finish the rollout where it stands: devices not reached yet are
    skipped, devices reached keep what they have."""
    rollout.devices.filter(status=DeviceStatus.PENDING).update(status=DeviceStatus.SKIPPED)
    set_status(rollout, status, reason, finished_at=now, next_batch_at=None)
    event_record(
        rollout=rollout, event_type=event_type, message=rollout.status_reason, now=now, data=data
    )


@transaction.atomic
def rollout_pause(*, rollout_id, actor: str, now: datetime | None = None) -> Rollout:
    now = now or timezone.now()
    rollout = _locked(rollout_id)
    if rollout.status == RolloutStatus.PAUSED:
        return rollout
    if rollout.status != RolloutStatus.IN_PROGRESS:
        raise InvalidTransition(rollout, "pause")
    set_status(rollout, RolloutStatus.PAUSED, f"Paused by {actor}.")
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_PAUSED,
        message=rollout.status_reason,
        now=now,
        data={"actor": actor},
    )
    return rollout


@transaction.atomic
def rollout_resume(*, rollout_id, actor: str, now: datetime | None = None) -> Rollout:
    now = now or timezone.now()
    rollout = _locked(rollout_id)
    if rollout.status == RolloutStatus.IN_PROGRESS:
        return rollout
    if rollout.status != RolloutStatus.PAUSED:
        raise InvalidTransition(rollout, "resume")
    # Resuming acknowledges the failures so far: the threshold judges the
    # verdicts that come after this moment.
    set_status(rollout, RolloutStatus.IN_PROGRESS, judged_since=now)
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_RESUMED,
        message=f"Resumed by {actor}.",
        now=now,
        data={"actor": actor},
    )
    rollout_advance_locked(rollout, now)
    return rollout


@transaction.atomic
def rollout_cancel(*, rollout_id, actor: str, now: datetime | None = None) -> Rollout:
    """Stop here: devices keep what they have, devices not reached are skipped."""
    now = now or timezone.now()
    rollout = _locked(rollout_id)
    if rollout.status == RolloutStatus.CANCELLED:
        return rollout
    if rollout.status not in (
        RolloutStatus.PENDING,
        RolloutStatus.IN_PROGRESS,
        RolloutStatus.PAUSED,
    ):
        raise InvalidTransition(rollout, "cancel")
    _end_before_reaching_the_rest(
        rollout, RolloutStatus.CANCELLED, EventType.ROLLOUT_CANCELLED, f"Cancelled by {actor}.", now,
        data={"actor": actor},
    )
    return rollout


@transaction.atomic
def rollout_rollback_all(*, rollout_id, actor: str, now: datetime | None = None) -> Rollout:
    """Send every device this rollout moved back to the image it ran before."""
    now = now or timezone.now()
    rollout = _locked(rollout_id)
    if rollout.status == RolloutStatus.ROLLED_BACK:
        return rollout
    if rollout.status not in (
        RolloutStatus.IN_PROGRESS,
        RolloutStatus.PAUSED,
        RolloutStatus.COMPLETED,
        RolloutStatus.CANCELLED,
    ):
        raise InvalidTransition(rollout, "roll back")
    rollout.devices.filter(status=DeviceStatus.PENDING).update(status=DeviceStatus.SKIPPED)
    moved = [
        DeviceStatus.SCHEDULED,
        DeviceStatus.UPDATED,
        DeviceStatus.HEALTHY,
        DeviceStatus.FAILED,
        DeviceStatus.DEFERRED,
    ]
    count = roll_back_devices(rollout, moved, now)
    set_status(
        rollout,
        RolloutStatus.ROLLED_BACK,
        f"Rolled back by {actor}.",
        finished_at=now,
        next_batch_at=None,
    )
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_ROLLED_BACK,
        message=f"{rollout.status_reason} {count} devices sent back to their previous image.",
        now=now,
        data={"actor": actor, "devices": count},
    )
    return rollout


@transaction.atomic
def rollout_retry(*, rollout_id, actor: str, now: datetime | None = None) -> Rollout:
    """Send the release again to the failed and rolled-back devices of the
    batches started so far; a paused rollout resumes."""
    now = now or timezone.now()
    rollout = _locked(rollout_id)
    if rollout.status not in (RolloutStatus.IN_PROGRESS, RolloutStatus.PAUSED):
        raise InvalidTransition(rollout, "retry")
    rows = rollout.devices.filter(
        batch__lte=rollout.current_batch,
        status__in=[DeviceStatus.FAILED, DeviceStatus.ROLLED_BACK],
    )
    count = resend_devices(rollout, rows, now)
    resumed = rollout.status == RolloutStatus.PAUSED
    fields = {}
    if resumed:
        # As a resume: the threshold judges the verdicts from here on.
        fields["judged_since"] = now
    if count and rollout.batch_finished_at is not None:
        # Its batch has devices in flight again: it finishes once they have
        # their verdicts, and its delay runs from then.
        fields.update(batch_finished_at=None, next_batch_at=None)
    set_status(rollout, RolloutStatus.IN_PROGRESS, **fields)
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_RETRIED,
        message=f"Retried by {actor}: {count} devices sent the new image again.",
        now=now,
        data={"actor": actor, "devices": count},
    )
    if resumed:
        event_record(
            rollout=rollout,
            event_type=EventType.ROLLOUT_RESUMED,
            message=f"Resumed by {actor} (retry).",
            now=now,
            data={"actor": actor},
        )
    rollout_advance_locked(rollout, now)
    return rollout
