"""Rollout engine steps at fleet scale, each against raw SQL writing the same rows.

Ours: `rollout_create_for_push` + `rollout_fan_out` (what the webhook and the
Celery task run), then `rollout_start` of the 100,000-device rollout, which
starts its first batch of 50,000 through `rollout_advance_locked` (the code
the tick runs). The baselines write the same rows with the fewest statements
that can: one INSERT .. SELECT; three UPDATEs and the events' INSERT .. SELECT.
"""

import statistics
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from devices.models import Device, DeviceService
from rollouts.models import (
    ACTIVE_STATUSES,
    DeviceStatus,
    Rollout,
    RolloutDevice,
    RolloutEvent,
    RolloutStatus,
)
from rollouts.services import rollout_create_for_push, rollout_fan_out, rollout_start

from ..fleets import (
    BATCH_PERCENTAGES,
    ENGINE_10K,
    ENGINE_100K,
    HOOK_10,
    ensure_fleet,
    ensure_policy,
    settle,
)
from ..measure import Step, measure
from ..report import ratio, size, table

TITLE = "Rollout engine at fleet scale (in process, PostgreSQL)"

BATCH = BATCH_PERCENTAGES[0] * 100_000 // 100


@dataclass
class EngineRow:
    label: str
    ours: list[Step] = field(default_factory=list)
    baseline: list[Step] = field(default_factory=list)


def median_step(steps: list[Step]) -> Step:
    return Step(
        seconds=statistics.median(step.seconds for step in steps),
        queries=max(step.queries for step in steps),
        peak_bytes=int(statistics.median(step.peak_bytes for step in steps)),
    )


def prepare(bench) -> None:
    ensure_policy()
    ensure_fleet(HOOK_10, 10)
    ensure_fleet(ENGINE_10K, 10_000)
    ensure_fleet(ENGINE_100K, 100_000)
    settle()


def run(bench) -> list[str]:
    repeats = bench.options.engine_repeats
    return section(repeats, run_engine_benchmarks(bench.log, repeats))


def run_engine_benchmarks(log, repeats: int) -> list[EngineRow]:
    """Each step `repeats` times, ours then the baseline, each from a settled
    database (vacuumed, checkpointed)."""
    _warm_up()
    create_10k = EngineRow("Create a rollout for 10,000 devices")
    create_100k = EngineRow("Create a rollout for 100,000 devices")
    advance = EngineRow(f"Advance: start a batch of {BATCH:,} devices")
    for round_number in range(1, repeats + 1):
        tag = f"v2.{round_number}.0"
        log(f"engine round {round_number} of {repeats}: create 10,000, create 100,000, advance")
        _create(create_10k, ENGINE_10K, tag, 10_000)
        rollout, baseline_rollout = _create(create_100k, ENGINE_100K, tag, 100_000)
        settle()
        with measure() as ours:
            rollout_start(rollout_id=rollout.pk, actor="bench")
        _expect(rollout.devices.filter(status=DeviceStatus.SCHEDULED).count(), BATCH, "scheduled")
        settle()
        with measure() as baseline:
            scheduled = _advance_baseline(baseline_rollout, tag)
        _expect(scheduled, BATCH, "baseline scheduled")
        advance.ours.append(ours)
        advance.baseline.append(baseline)
    return [create_10k, create_100k, advance]


def _warm_up() -> None:
    """Import and connect everything a first push needs (tasks module, broker
    connection), on a fleet no measurement uses."""
    outcome = rollout_create_for_push(image=HOOK_10, tag="warm-up", digest=None)
    rollout_fan_out(rollout_id=outcome.rollout.pk)


def _create(row: EngineRow, image: str, tag: str, devices: int) -> tuple[Rollout, Rollout]:
    # The previous round's rollout would be superseded inside the measured
    # step (skipping its pending rows); mark it ended beforehand instead.
    Rollout.objects.filter(image=image, status__in=ACTIVE_STATUSES).update(
        status=RolloutStatus.CANCELLED
    )
    settle()
    with measure() as ours:
        outcome = rollout_create_for_push(image=image, tag=tag, digest=None)
        if outcome.rollout is None:
            raise RuntimeError(f"Benchmark setup is wrong: the push answered {outcome.status}.")
        # In production the worker runs this after commit; here, in line.
        rollout_fan_out(rollout_id=outcome.rollout.pk)
    _expect(outcome.rollout.devices.count(), devices, "rollout rows")
    baseline_rollout = _baseline_rollout(image, tag)
    settle()
    with measure() as baseline:
        inserted = _create_baseline(baseline_rollout, image, tag, devices)
    _expect(inserted, devices, "baseline rows")
    row.ours.append(ours)
    row.baseline.append(baseline)
    return outcome.rollout, baseline_rollout


def _expect(actual: int, wanted: int, what: str) -> None:
    if actual != wanted:
        raise RuntimeError(f"Benchmark setup is wrong: {what} {actual}, expected {wanted}.")


def _baseline_rollout(image: str, tag: str) -> Rollout:
    """The row the baseline's device rows point to; cancelled, so the engine
    and the superseding of later pushes never look at it."""
    return Rollout.objects.create(
        image=image,
        new_tag=tag,
        trigger="manual",
        strategy="manual",
        batch_percentages=BATCH_PERCENTAGES,
        total_batches=len(BATCH_PERCENTAGES),
        status=RolloutStatus.CANCELLED,
    )


def _create_baseline(rollout: Rollout, image: str, tag: str, devices: int) -> int:
    first_batch = devices * BATCH_PERCENTAGES[0] // 100
    sql = f"""
        INSERT INTO {RolloutDevice._meta.db_table}
            (rollout_id, device_id, service, batch, status, failure_reason,
             old_tag, old_digest, new_tag, new_digest, step, via, hop)
        SELECT %s, s.device_id, s.name,
               CASE WHEN ROW_NUMBER() OVER (ORDER BY d.uuid) <= %s THEN 1 ELSE 2 END,
               'pending', '', s.target_tag, s.target_digest, %s, NULL, 0, '[]', 0
        FROM {DeviceService._meta.db_table} s
        JOIN {Device._meta.db_table} d ON d.id = s.device_id
        WHERE s.target_image = %s AND s.target_tag <> %s
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [rollout.pk, first_batch, tag, image, tag])
        return cursor.rowcount


def _advance_baseline(rollout: Rollout, tag: str) -> int:
    """Batch 1 of the baseline rollout: the same devices as ours (both order
    the rows by device uuid), so the same rows are written again."""
    rows = RolloutDevice._meta.db_table
    services = DeviceService._meta.db_table
    devices = Device._meta.db_table
    events = RolloutEvent._meta.db_table
    now = timezone.now()
    step = 1
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {rows} SET status = 'scheduled', scheduled_at = %s, step = %s "
            "WHERE rollout_id = %s AND batch = 1 AND status = 'pending'",
            [now, step, rollout.pk],
        )
        scheduled = cursor.rowcount
        cursor.execute(
            f"""
            UPDATE {services} s
            SET previous_image = s.target_image, previous_tag = s.target_tag,
                previous_digest = s.target_digest, target_tag = %s, target_digest = NULL,
                target_rollout_id = %s, target_changed_at = %s
            FROM {rows} rd
            WHERE rd.rollout_id = %s AND rd.step = %s
              AND rd.device_id = s.device_id AND rd.service = s.name
            """,
            [tag, rollout.pk, now, rollout.pk, step],
        )
        cursor.execute(
            f"""
            UPDATE {devices} d SET target_version = d.target_version + 1
            FROM {rows} rd WHERE rd.rollout_id = %s AND rd.step = %s AND rd.device_id = d.id
            """,
            [rollout.pk, step],
        )
        cursor.execute(
            f"""
            INSERT INTO {events} (rollout_id, event_type, device_uuid, message, data, timestamp)
            SELECT rd.rollout_id, 'image.device_scheduled', d.uuid,
                   d.name || '/' || rd.service || ' scheduled for the new image',
                   jsonb_build_object('service', rd.service, 'batch', rd.batch), %s
            FROM {rows} rd JOIN {devices} d ON d.id = rd.device_id
            WHERE rd.rollout_id = %s AND rd.step = %s
            """,
            [now, rollout.pk, step],
        )
    return scheduled



def _seconds(steps: list[Step]) -> str:
    median = median_step(steps).seconds
    if len(steps) == 1:
        return f"{median:.2f} s"
    low, high = min(s.seconds for s in steps), max(s.seconds for s in steps)
    return f"{median:.2f} s ({low:.2f}–{high:.2f})"


def section(repeats: int, engine: list[EngineRow]) -> list[str]:
    rows = []
    for row in engine:
        ours, baseline = median_step(row.ours), median_step(row.baseline)
        rows.append(
            [
                row.label,
                _seconds(row.ours),
                _seconds(row.baseline),
                ratio(ours.seconds, baseline.seconds),
                f"{ours.queries} / {baseline.queries}",
                f"{size(ours.peak_bytes)} / {size(baseline.peak_bytes)}",
            ]
        )
    header = [
        "step",
        "ours",
        "raw SQL baseline",
        "ours / baseline",
        "queries (ours / baseline)",
        "peak Python memory (ours / baseline)",
    ]
    return [
        "Create: `rollout_create_for_push` + `rollout_fan_out` (a manual-strategy policy, "
        "so the fan-out only fills the rollout) against one `INSERT … SELECT` of the same "
        "rows. Advance: `rollout_start` of the 100,000-device rollout, which schedules its "
        "first batch through `rollout_advance_locked` (the tick's code), against three "
        "`UPDATE`s (rollout rows, services, devices) and the events' `INSERT … SELECT` on "
        "the same devices, in one transaction. Wall time is the median of "
        f"{repeats} rounds (range in brackets), each step starting from a "
        "vacuumed and checkpointed database; queries include BEGIN/COMMIT (Django's "
        "CaptureQueriesContext); memory is the peak of the Python heap (tracemalloc) "
        "during the step, median of the rounds.",
        "",
        *table(header, rows),
    ]
