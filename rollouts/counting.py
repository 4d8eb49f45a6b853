"""The counters and histograms of rollouts, derived from the event log.

The engine writes one event per transition in the transition's transaction,
so the log already says how many devices became healthy, failed or went
back, and when each rollout finished. A rollup pass counts the events the
committed-order cursor has settled since the last pass, adds them to the
database counters and saves its position in the same transaction: each
event is counted exactly once, by whichever process runs the pass (/metrics
before it answers, and the beat task), and the engine is not touched.
"""

import time
from collections.abc import Callable

from django.db import transaction
from django.db.models import Count, F

from counters.models import CounterCursor
from counters.services import counters_add, histogram_increments, histogram_observe

from .models import RolloutEvent
from .streams.cursor import CommittedEventCursor

DEVICE_RESULT_BY_EVENT = {
    "image.health_check_passed": "healthy",
    "image.device_failed": "failed",
    "image.health_check_failed": "failed",
    "image.device_rolled_back": "rolled_back",
}
FINISHED_STATUS_BY_EVENT = {
    "image.rollout_completed": "completed",
    "image.rollout_rolled_back": "rolled_back",
    "image.rollout_cancelled": "cancelled",
    "image.rollout_superseded": "superseded",
    "image.rollout_rejected": "rejected",
}
COMPLETED_EVENT = "image.rollout_completed"
# Written on a failure-threshold breach only (an operator's roll back all is
# image.rollout_rolled_back): with the rollout's auto_rollback_enabled, the
# engine sent devices back by itself.
BREACH_EVENT = "image.rollout_failed"
CURSOR_NAME = "rollout-events"
# Event ids settled per step, and steps per pass: a pass after a long quiet
# time stops after this many and leaves the rest to the next one.
STEP_IDS = 10_000
STEPS_PER_PASS = 20


def rollout_counters_rollup() -> int:
    """Count what the event log gained; returns how many events it counted."""
    counted = 0
    for _ in range(STEPS_PER_PASS):
        step = _rollup_step()
        if step is None:
            break
        counted += step
    return counted


@transaction.atomic
def _rollup_step() -> int | None:
    CounterCursor.objects.get_or_create(name=CURSOR_NAME)
    saved = CounterCursor.objects.select_for_update().get(name=CURSOR_NAME)
    cursor = CommittedEventCursor.from_state(saved.position, saved.state.get("gap"))
    after, up_to = cursor.advance(limit=STEP_IDS)
    saved.position, gap = cursor.state()
    saved.state = {"gap": gap}
    saved.save(update_fields=["position", "state"])
    if up_to == after:
        return None
    events = RolloutEvent.objects.filter(id__gt=after, id__lte=up_to)
    increments = _device_updates(events) + _finished_rollouts(events) + _auto_rollbacks(events)
    counters_add(increments)
    return up_to - after


def _device_updates(events) -> list:
    rows = (
        events.filter(event_type__in=DEVICE_RESULT_BY_EVENT)
        .values_list("rollout__image", "event_type")
        .annotate(n=Count("id"))
    )
    return [
        ("fleet_device_updates_total", {"image": image, "result": DEVICE_RESULT_BY_EVENT[kind]}, n)
        for image, kind, n in rows
    ]


def _auto_rollbacks(events) -> list:
    rows = (
        events.filter(event_type=BREACH_EVENT, rollout__auto_rollback_enabled=True)
        .values_list("rollout__image")
        .annotate(n=Count("id"))
    )
    return [("fleet_auto_rollbacks_total", {"image": image}, n) for image, n in rows]


def _finished_rollouts(events) -> list:
    increments = []
    rows = events.filter(event_type__in=FINISHED_STATUS_BY_EVENT).values_list(
        "event_type", F("timestamp") - F("rollout__started_at")
    )
    for kind, duration in rows:
        increments.append(("fleet_rollouts_finished_total", {"status": FINISHED_STATUS_BY_EVENT[kind]}, 1))
        if kind == COMPLETED_EVENT and duration is not None:
            increments += histogram_increments(
                "fleet_rollout_duration_seconds", {}, max(duration.total_seconds(), 0.0)
            )
    return increments


def engine_tick_timed(tick: Callable[[], int]) -> int:
    """Run one engine tick and observe how long it took."""
    started = time.monotonic()
    try:
        return tick()
    finally:
        histogram_observe("fleet_engine_tick_seconds", {}, time.monotonic() - started)
