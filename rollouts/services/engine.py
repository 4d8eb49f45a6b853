"""The engine: judge devices, guard the failure threshold, start the next batch.

Every device transition is a set-based UPDATE tagged with a fresh `step`
number, followed by one INSERT .. SELECT of its events, so the number of
statements per rollout and tick does not depend on the number of devices.
Everything here runs inside a transaction that holds the rollout's row lock.
"""

import math
from datetime import datetime, timedelta

from django.db.models import (
    Case,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    Min,
    OuterRef,
    Q,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from devices.models import Device, DeviceService, HistorySource, ServiceHealth, ServiceStatus

from ..models import (
    IN_FLIGHT,
    WATCHED,
    DeviceStatus,
    EventType,
    FailureReason,
    Rollout,
    RolloutDevice,
    RolloutStatus,
    SkipReason,
)
from ..windows import next_window_opening, window_is_open
from .batch_writes import (
    bump_target_versions,
    retarget_services_of_step,
    schedule_pending_rows,
)
from .events import event_record, events_for_skips, events_for_step
from .outcomes import outcomes_for_step
from .stones import next_hop_rows

# How far the clocks of web and worker processes may disagree (see _fresh_report).
CLOCK_SKEW = timedelta(seconds=5)


def rollout_advance_locked(rollout: Rollout, now: datetime) -> None:
    if rollout.fanned_out_at is None:
        return
    if rollout.status == RolloutStatus.COMPLETED:
        # Deferred devices that come back are still judged, without
        # reopening the rollout (no threshold, no next batch).
        _watch_devices(rollout, now)
        return
    if rollout.status != RolloutStatus.IN_PROGRESS:
        return
    # Once a batch is finished nothing is in flight until the next one starts
    # but deferred devices that come back: the ticks of the delay only look
    # for those (one read) and skip judging and its writes otherwise.
    if rollout.current_batch and rollout.batch_finished_at is None:
        _watch_devices(rollout, now)
        state = _batch_state(rollout)
        # Every released device of the batch has a verdict (or is deferred):
        # the verdicts at hand are all there will be until more are released,
        # so they are judged as at the end of a batch.
        waiting = state["in_flight"] == 0
        if _threshold_breached(rollout, state["healthy"], state["failed"], batch_finished=waiting):
            _pause_for_breach(rollout, state["healthy"], state["failed"], now)
            return
        if state["pending"]:
            release_devices(rollout, rollout.current_batch, now, counts=state)
            return
        if not waiting:
            return
        _finish_batch(rollout, now)
    elif rollout.current_batch:
        # A finished batch: only deferred devices coming back need a look.
        _watch_devices(rollout, now, look_first=True)
    if rollout.status == RolloutStatus.IN_PROGRESS and _next_batch_due(rollout, now):
        _start_next_batch(rollout, now)


def _next_step(rollout: Rollout) -> int:
    # Persisted with the rollout's other fields; the row lock makes it unique.
    rollout.step += 1
    Rollout.objects.filter(pk=rollout.pk).update(step=rollout.step)
    return rollout.step


# --- judging ---------------------------------------------------------------


def _runs_new_version(rollout: Rollout) -> Q:
    """The service reports the version its row is sent (the row's new_tag
    and new_digest: the push, or a stepping stone on the way); by digest
    when both sides know it, by tag otherwise. Inside `_fresh_report`, so
    OuterRef is the row."""
    by_tag = Q(reported_tag=OuterRef("new_tag")) & (
        # A row without a digest: any digest; with one: that digest.
        Q(reported_digest__isnull=True)
        | Q(reported_digest=Coalesce(OuterRef("new_digest"), F("reported_digest")))
    )
    return Q(reported_image=rollout.image) & (by_tag | Q(reported_digest=OuterRef("new_digest")))


def _fresh_report(condition: Q) -> Q:
    """A report of the row's service, made after the row was scheduled.

    `reported_at` comes from a web process's clock and `scheduled_at` from a
    worker's; CLOCK_SKEW forgives them disagreeing by a few seconds, which is
    safe because a report a few seconds early cannot show the new release.
    After a retry the release is the same as the failed attempt's, so the
    report must also be made towards the target_version of the retry
    (`retry_target_version`, null for a first attempt). First attempts, the
    most rows by far, skip that join.
    """
    scheduled = ExpressionWrapper(
        OuterRef("scheduled_at") - CLOCK_SKEW, output_field=DateTimeField()
    )
    reports = DeviceService.objects.filter(
        condition,
        device_id=OuterRef("device_id"),
        name=OuterRef("service"),
        reported_at__gte=scheduled,
    )
    towards_retry = reports.filter(
        device__reported_target_version__gte=OuterRef("retry_target_version")
    )
    return Q(Exists(reports), retry_target_version__isnull=True) | Q(
        Exists(towards_retry), retry_target_version__isnull=False
    )


def _seen_since_scheduled() -> Exists:
    """The device polled (or reported) after the row's release was sent."""
    return Exists(
        Device.objects.filter(pk=OuterRef("device_id")).filter(
            Q(last_seen_at__gte=OuterRef("scheduled_at"))
            | Q(last_report_at__gte=OuterRef("scheduled_at"))
        )
    )


def _verdict_rules(rollout: Rollout, now: datetime) -> list[tuple[Q, dict]]:
    """(condition, new values) in order; the first that matches a row wins,
    because every later rule only sees rows still in flight."""
    new = _runs_new_version(rollout)
    running = Q(reported_status=ServiceStatus.RUNNING)
    if rollout.health_check_enabled:
        # `none`: the image has no health check; running is all we can know.
        passed = running & Q(
            reported_health__in=[ServiceHealth.HEALTHY, ServiceHealth.NONE]
        )
    else:
        passed = running
    unhealthy = running & Q(reported_health=ServiceHealth.UNHEALTHY)
    # Only a crash of the new release counts against it: a device whose old
    # container was already failing must not fail the canary batch. (The
    # reference agent reports a failed pull as the new image, status failed.)
    crashed = new & Q(reported_status__in=[ServiceStatus.EXITED, ServiceStatus.FAILED])
    timed_out = Q(
        timer_started_at__lte=now - timedelta(seconds=rollout.health_check_timeout_seconds)
    )
    failed = {"status": DeviceStatus.FAILED, "verdict_at": now}
    # A health verdict only for a row already `updated`: a report committed
    # after this tick's `updated` statement must not skip that step (and its
    # image.device_updated event); the next tick moves it on.
    seen_running = Q(status=DeviceStatus.UPDATED)
    rules = [
        (
            seen_running & _fresh_report(new & passed),
            {"status": DeviceStatus.HEALTHY, "verdict_at": now},
        ),
        (
            seen_running & _fresh_report(new & unhealthy),
            {**failed, "failure_reason": FailureReason.UNHEALTHY},
        ),
        (_fresh_report(crashed), {**failed, "failure_reason": FailureReason.CRASHED}),
        # Not a verdict: a device that never polled its new target looks
        # offline, and is looked at again when it polls.
        (
            timed_out & Q(status=DeviceStatus.SCHEDULED) & ~_seen_since_scheduled(),
            {"status": DeviceStatus.DEFERRED},
        ),
        (timed_out, {**failed, "failure_reason": FailureReason.TIMEOUT}),
    ]
    if not rollout.health_check_enabled:
        del rules[1]
    return rules


def _watch_devices(rollout: Rollout, now: datetime, *, look_first: bool = False) -> None:
    """Judge the rows in flight, defer the silent ones, retry the failed
    ones, and schedule again the deferred ones that polled: all batches, as
    a deferred device of an earlier batch may come back at any time.
    `look_first`: most likely there is none (a batch delay), so one cheap
    look (the partial index) spares the statements below."""
    watched = RolloutDevice.objects.filter(rollout=rollout, status__in=WATCHED)
    if look_first and not watched.exists():
        return
    in_flight = watched.filter(status__in=IN_FLIGHT)
    # First `updated`, as its own step, so a device judged in the same tick
    # still leaves its image.device_updated event before its verdict. In the
    # same statement, deferred devices that polled again are scheduled
    # again, with a fresh timer.
    running_new = _runs_new_version(rollout) & Q(reported_status=ServiceStatus.RUNNING)
    came_back = Q(status=DeviceStatus.DEFERRED)
    # A deferred device that comes back after another rollout (or an
    # operator) took its service over is no longer this rollout's to judge.
    ours = DeviceService.objects.filter(
        device_id=OuterRef("device_id"), name=OuterRef("service"), target_rollout_id=rollout.pk
    )
    watched.filter(came_back, _seen_since_scheduled()).exclude(Exists(ours)).update(
        status=DeviceStatus.SKIPPED
    )
    step = _next_step(rollout)
    updated = watched.filter(
        (Q(status=DeviceStatus.SCHEDULED) & _fresh_report(running_new))
        | (came_back & _seen_since_scheduled())
    ).update(
        step=step,
        status=Case(
            When(came_back, then=Value(DeviceStatus.SCHEDULED)), default=Value(DeviceStatus.UPDATED)
        ),
        timer_started_at=Case(When(came_back, then=Value(now)), default=F("timer_started_at")),
    )
    if updated:
        events_for_step(rollout=rollout, step=step, now=now)
    step = _next_step(rollout)
    changed = failed = 0
    for condition, values in _verdict_rules(rollout, now):
        count = in_flight.filter(condition).update(step=step, **values)
        changed += count
        failed += count if values["status"] == DeviceStatus.FAILED else 0
    if failed and rollout.max_retries:
        # Before the step's events: a retried device's failure is no verdict.
        _retry_failed(rollout, step, now)
    if changed:
        events_for_step(rollout=rollout, step=step, now=now)
        outcomes_for_step(rollout=rollout, step=step)
    if rollout.required_versions:
        _send_next_hop(rollout, now)


def _send_next_hop(rollout: Rollout, now: datetime) -> None:
    """Devices just judged healthy on a stepping stone are sent the next
    version of their upgrade path (see stones.py)."""
    step = _next_step(rollout)
    if next_hop_rows(rollout, step=step, now=now):
        _retarget_services(rollout, step, now, rollback=False)
        events_for_step(rollout=rollout, step=step, now=now)


def _retry_failed(rollout: Rollout, verdict_step: int, now: datetime) -> None:
    """Send the release again to the devices that just failed and have
    attempts left (`max_retries`)."""
    rows = RolloutDevice.objects.filter(
        rollout=rollout,
        step=verdict_step,
        status=DeviceStatus.FAILED,
        attempts__lte=rollout.max_retries,
    )
    resend_devices(rollout, rows, now)


def resend_devices(rollout: Rollout, rows, now: datetime) -> int:
    """Release the rollout's version again to `rows` (failed, or rolled
    back): image.device_retried per device (with the reason of the failed
    attempt), a bumped target_version, a new attempt with a fresh timer.
    Returns how many were sent."""
    step = _next_step(rollout)
    sent = rows.update(step=step)
    if not sent:
        return 0
    events_for_step(rollout=rollout, step=step, now=now, event_type=EventType.DEVICE_RETRIED)
    _retarget_services(rollout, step, now, rollback=False, resend=True)
    # After the bump: the version the device must now report towards.
    RolloutDevice.objects.filter(rollout=rollout, step=step).update(
        status=DeviceStatus.SCHEDULED,
        failure_reason="",
        verdict_at=None,
        scheduled_at=now,
        timer_started_at=now,
        attempts=F("attempts") + 1,
        retry_target_version=Subquery(
            Device.objects.filter(pk=OuterRef("device_id")).values("target_version")[:1]
        ),
    )
    return sent


def _batch_state(rollout: Rollout) -> dict[str, int]:
    """One aggregate: the verdicts the threshold judges (since `judged_since`;
    a failed device stays counted as failed after it was rolled back) and
    what the current batch still has in flight and pending."""
    since = Q(verdict_at__gte=rollout.judged_since) if rollout.judged_since else Q()
    current = Q(batch=rollout.current_batch)
    return RolloutDevice.objects.filter(rollout=rollout).aggregate(
        healthy=Count("id", filter=since & Q(status=DeviceStatus.HEALTHY)),
        failed=Count("id", filter=since & ~Q(failure_reason="")),
        in_flight=Count("id", filter=current & Q(status__in=IN_FLIGHT)),
        pending=Count("id", filter=current & Q(status=DeviceStatus.PENDING)),
        **_RAMP_COUNTS,
    )


def verdict_counts(rollout: Rollout, since: datetime | None = None) -> tuple[int, int]:
    """(healthy, failed) verdicts; a failed device stays counted as failed
    after it was rolled back."""
    rows = RolloutDevice.objects.filter(rollout=rollout)
    if since:
        rows = rows.filter(verdict_at__gte=since)
    counts = rows.aggregate(
        healthy=Count("id", filter=Q(status=DeviceStatus.HEALTHY)),
        failed=Count("id", filter=~Q(failure_reason="")),
    )
    return counts["healthy"], counts["failed"]


def _threshold_breached(
    rollout: Rollout, healthy: int, failed: int, *, batch_finished: bool
) -> bool:
    judged = healthy + failed
    if not judged or failed / judged <= rollout.max_failure_rate:
        return False
    return batch_finished or judged >= rollout.min_failure_samples


def _pause_for_breach(rollout: Rollout, healthy: int, failed: int, now: datetime) -> None:
    rate = failed / (healthy + failed)
    rollout.status = RolloutStatus.PAUSED
    rollout.status_reason = (
        f"Failure rate {rate:.2f} exceeded {rollout.max_failure_rate:.2f} "
        f"({failed} failed of {healthy + failed} verdicts) in batch {rollout.current_batch}."
    )
    rollout.save(update_fields=["status", "status_reason"])
    data = {"failure_rate": round(rate, 4), "failed": failed, "healthy": healthy}
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_FAILED,
        message=rollout.status_reason,
        now=now,
        data=data,
    )
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_PAUSED,
        message="Paused by the failure threshold.",
        now=now,
        data=data,
    )
    if rollout.auto_rollback_enabled:
        # Deferred devices too: their target names the release that failed.
        roll_back_devices(
            rollout,
            [DeviceStatus.FAILED, DeviceStatus.SCHEDULED, DeviceStatus.UPDATED, DeviceStatus.DEFERRED],
            now,
        )


# --- batches ---------------------------------------------------------------


def _finish_batch(rollout: Rollout, now: datetime) -> None:
    # The delay (and the maintenance window) only hold back a next batch:
    # after the last one the rollout is complete at once.
    last = _next_batch_number(rollout) is None
    rollout.batch_finished_at = now
    rollout.next_batch_at = None if last else now + timedelta(minutes=rollout.batch_delay_minutes)
    rollout.save(update_fields=["batch_finished_at", "next_batch_at"])
    event_record(
        rollout=rollout,
        event_type=EventType.BATCH_COMPLETED,
        message=f"Batch {rollout.current_batch} of {rollout.total_batches} completed.",
        now=now,
        data={"batch": rollout.current_batch},
    )
    if last:
        _complete(rollout, now)


def _next_batch_number(rollout: Rollout) -> int | None:
    """The first batch after the current one that still has devices to schedule."""
    later = RolloutDevice.objects.filter(
        rollout=rollout, status=DeviceStatus.PENDING, batch__gt=rollout.current_batch
    )
    return later.aggregate(n=Min("batch"))["n"]


def _next_batch_due(rollout: Rollout, now: datetime) -> bool:
    # A start time already known (the delay's end, or the window's opening
    # found by an earlier tick) spares the window search on every tick.
    if rollout.next_batch_at and rollout.next_batch_at > now:
        return False
    if rollout.current_batch and rollout.next_batch_at is None:
        return False
    if not window_is_open(rollout.maintenance_window, now):
        opening = next_window_opening(rollout.maintenance_window, now)
        if rollout.next_batch_at != opening:
            rollout.next_batch_at = opening
            rollout.save(update_fields=["next_batch_at"])
        return False
    return True


def _start_next_batch(rollout: Rollout, now: datetime) -> None:
    batch = _next_batch_number(rollout)
    if batch is None:
        _complete(rollout, now)
        return
    scheduled = release_devices(rollout, batch, now)
    rollout.current_batch = batch
    rollout.batch_finished_at = None
    rollout.next_batch_at = None
    rollout.save(update_fields=["current_batch", "batch_finished_at", "next_batch_at"])
    event_record(
        rollout=rollout,
        event_type=EventType.BATCH_STARTED,
        message=f"Batch {batch} of {rollout.total_batches} started: {scheduled} devices.",
        now=now,
        data={"batch": batch, "devices": scheduled},
    )


def release_devices(
    rollout: Rollout, batch: int, now: datetime, *, counts: dict[str, int] | None = None
) -> int:
    """Point pending devices of the batch at the new image and bump their
    target_version, all in set-based statements: the whole batch, or with a
    ramp as many as it allows, devices seen recently first."""
    rows = RolloutDevice.objects.filter(rollout=rollout, batch=batch, status=DeviceStatus.PENDING)
    new_version = Q(target_tag=rollout.new_tag)
    if rollout.new_digest:
        new_version &= Q(target_digest=rollout.new_digest)
    service = DeviceService.objects.filter(
        device_id=OuterRef("device_id"), name=OuterRef("service"), target_image=rollout.image
    )
    still_to_move = service.filter(pinned=False).exclude(new_version)
    # Since the fan-out an operator moved the service to another image,
    # already onto this version, or pinned it: nothing is left to do for it.
    skipped = rows.exclude(Exists(still_to_move)).update(
        status=DeviceStatus.SKIPPED,
        skip_reason=Case(
            When(Exists(service.filter(pinned=True)), then=Value(SkipReason.PINNED)),
            When(Exists(service.filter(new_version)), then=Value(SkipReason.ALREADY_CURRENT)),
        ),
    )
    if skipped:
        events_for_skips(rollout=rollout, now=now, batch=batch)
    only = None
    if rollout.ramp_initial is not None:
        room = _ramp_room(rollout, counts)
        if room <= 0:
            return 0
        # Devices that look offline last: released, they would only be
        # deferred; devices that polled lately first, then canary order.
        first = rows.order_by(F("device__last_seen_at").desc(nulls_last=True), "pk")
        only = first.values("pk")[:room]
    step = _next_step(rollout)
    # The rollback target is what the device runs now, not at fan-out: the
    # rows are joined to their services (one pass, no per-row subquery).
    scheduled = schedule_pending_rows(rollout, batch=batch, step=step, now=now, only=only)
    if scheduled:
        _retarget_services(rollout, step, now, rollback=False)
        events_for_step(rollout=rollout, step=step, now=now)
    return scheduled


# Released: sent the release at least once and not deferred (a deferred
# device never took it); healthy over the whole rollout.
_RAMP_COUNTS = {
    "released": Count("id", filter=Q(attempts__gt=0) & ~Q(status=DeviceStatus.DEFERRED)),
    "healthy_devices": Count("id", filter=Q(status=DeviceStatus.HEALTHY)),
}


def _ramp_room(rollout: Rollout, counts: dict[str, int] | None) -> int:
    """How many more devices the ramp lets have the release: released
    devices stay at most ramp_initial + ramp_factor x healthy devices.
    `counts` (the tick's aggregate) spares counting again."""
    if counts is None:
        counts = RolloutDevice.objects.filter(rollout=rollout).aggregate(**_RAMP_COUNTS)
    limit = rollout.ramp_initial + math.floor(rollout.ramp_factor * counts["healthy_devices"])
    return limit - counts["released"]


def _retarget_services(
    rollout: Rollout, step: int, now: datetime, *, rollback: bool, resend: bool = False
) -> None:
    """Rewrite the target of the services changed at `step` (to the new image,
    or back to the old one) and bump each of their devices' target_version
    once. The old target becomes the previous one either way.

    `resend` (a retry): services that still target the new version keep
    their target and previous target, and only have target_changed_at and
    target_version move, so the device applies it again."""
    # One UPDATE .. FROM the step's rows: each service reads its row once
    # (no subquery per column and row), with its history. The rollout's
    # ownership is re-checked there, not only when the rows were picked: an
    # operator's change (or another rollout's) committed in between must
    # not be overwritten; such a row simply gets no verdict and times out.
    # A pinned service is the operator's: no rollout moves it either way.
    retarget_services_of_step(
        rollout,
        step=step,
        now=now,
        rollback=rollback,
        resend=resend,
        history_source=HistorySource.ROLLBACK if rollback else HistorySource.ROLLOUT,
    )
    if resend:
        # After the history: the same target sent again is no new entry.
        # Few rows (the retried ones): the per-row subquery is cheap here.
        row = RolloutDevice.objects.filter(
            rollout=rollout, device_id=OuterRef("device_id"), service=OuterRef("name")
        ).order_by()
        changed = row.filter(step=step)
        sent_tag = (
            Subquery(row.values("new_tag")[:1]) if rollout.required_versions else rollout.new_tag
        )
        DeviceService.objects.filter(
            Exists(changed),
            target_image=rollout.image,
            target_rollout_id=rollout.pk,
            target_tag=sent_tag,
            pinned=False,
        ).exclude(target_changed_at=now).update(target_changed_at=now)
    # Device rows are locked in id order: two rollouts of different images
    # that share devices would otherwise deadlock bumping them at once.
    bump_target_versions(rollout, step=step)


def roll_back_devices(rollout: Rollout, statuses: list[str], now: datetime) -> int:
    """Send the rollout's devices in `statuses` back to the image they ran
    before it. Devices whose target another rollout or an operator has changed
    since are left alone."""
    ours = DeviceService.objects.filter(
        device_id=OuterRef("device_id"),
        name=OuterRef("service"),
        target_rollout_id=rollout.pk,
        pinned=False,
    )
    step = _next_step(rollout)
    rolled_back = (
        RolloutDevice.objects.filter(rollout=rollout, status__in=statuses)
        .filter(Exists(ours))
        .update(status=DeviceStatus.ROLLED_BACK, step=step)
    )
    if rolled_back:
        _retarget_services(rollout, step, now, rollback=True)
        events_for_step(rollout=rollout, step=step, now=now)
        outcomes_for_step(rollout=rollout, step=step)
    return rolled_back


def _complete(rollout: Rollout, now: datetime) -> None:
    rollout.status = RolloutStatus.COMPLETED
    rollout.status_reason = ""
    rollout.finished_at = now
    rollout.next_batch_at = None
    rollout.save(update_fields=["status", "status_reason", "finished_at", "next_batch_at"])
    event_record(
        rollout=rollout,
        event_type=EventType.ROLLOUT_COMPLETED,
        message=f"Rollout of {rollout.image}:{rollout.new_tag} completed.",
        now=now,
    )
