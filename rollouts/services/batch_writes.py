"""The engine's batch writes that read another table: `UPDATE .. FROM` a join.

The ORM spells "set this column from the matching row of that table" as a
correlated subquery per column and per row: at 50,000 devices that is
100,000 index probes, and a cost estimate high enough to make PostgreSQL
JIT-compile the statement (a second of compiling before the first row).
A join reads each side once. `UPDATE .. FROM` is PostgreSQL's and SQLite's
(3.33+, which bin/run has) spelling; the SQL below is the same for both.
"""

from datetime import datetime

from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet

from devices.history import history_record, history_record_returning
from devices.models import Device, DeviceService

from ..models import DeviceStatus, Rollout, RolloutDevice

_ROWS = RolloutDevice._meta.db_table
_SERVICES = DeviceService._meta.db_table
_DEVICES = Device._meta.db_table


def schedule_pending_rows(
    rollout: Rollout, *, batch: int, step: int, now: datetime, only: QuerySet | None = None
) -> int:
    """Schedule the pending rows of `batch` (or of `only`, a queryset of
    their pks: the ramp's pick) whose service still targets the rollout's
    image on another version and is not pinned, tagged with `step`. The
    rollback target (`old_tag`, `old_digest`) is what the service targets
    now. A row whose service stopped qualifying since the caller skipped
    the others stays pending, for the next tick's skip. Returns how many
    rows were scheduled."""
    on_new_version = "s.target_tag = %s"
    version_params = [rollout.new_tag]
    if rollout.new_digest:
        on_new_version += " AND s.target_digest = %s"
        version_params.append(rollout.new_digest)
    only_sql, only_params = "", []
    if only is not None:
        subquery, only_params = only.query.get_compiler(connection=connection).as_sql()
        only_sql = f"AND rd.id IN ({subquery})"
    at = connection.ops.adapt_datetimefield_value(now)
    sql = f"""
        UPDATE {_ROWS} AS rd
        SET status = %s, scheduled_at = %s, timer_started_at = %s, attempts = 1, step = %s,
            old_tag = s.target_tag, old_digest = s.target_digest
        FROM {_SERVICES} AS s
        WHERE rd.rollout_id = %s AND rd.batch = %s AND rd.status = %s {only_sql}
          AND s.device_id = rd.device_id AND s.name = rd.service
          AND s.target_image = %s AND NOT s.pinned
          AND NOT COALESCE({on_new_version}, FALSE)
    """
    params = [
        DeviceStatus.SCHEDULED.value,
        at,
        at,
        step,
        _rollout_id(rollout),
        batch,
        DeviceStatus.PENDING.value,
        *only_params,
        rollout.image,
        *version_params,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def retarget_services_of_step(
    rollout: Rollout, *, step: int, now: datetime, rollback: bool, resend: bool,
    history_source: str,
) -> None:
    """Rewrite the target of the services whose row changed at `step`: to the
    version the row is sent (the push, or its stepping stone), or back to
    the row's old version, and add their history (`history_source`). The
    old target becomes the previous one. Only services still the rollout's
    (`rollback`: still targeted by it; else still on its image) and not
    pinned; `resend`: services already on the row's version keep their
    target (and get no history row)."""
    rollout_id = _rollout_id(rollout)
    target_rollout_id = DeviceService._meta.get_field("target_rollout_id").get_db_prep_value(
        rollout.pk, connection
    )
    if rollback:
        target_sql = "target_tag = rd.old_tag, target_digest = rd.old_digest, target_rollout_id = NULL"
        target_params = []
        still_ours, still_ours_params = "s.target_rollout_id = %s", [target_rollout_id]
    elif rollout.required_versions:
        # Each row's version: the push, or a stepping stone on the way.
        target_sql = "target_tag = rd.new_tag, target_digest = rd.new_digest, target_rollout_id = %s"
        target_params = [target_rollout_id]
        still_ours, still_ours_params = "s.target_image = %s", [rollout.image]
    else:
        # Without stepping stones every row is sent the push.
        target_sql = "target_tag = %s, target_digest = %s, target_rollout_id = %s"
        target_params = [rollout.new_tag, rollout.new_digest, target_rollout_id]
        still_ours, still_ours_params = "s.target_image = %s", [rollout.image]
    keep_sent_sql, keep_sent_params = "", []
    if resend:
        # Sent by this rollout and still the version of the row (the push,
        # or the row's stepping stone): its target stays.
        sent_tag = "rd.new_tag" if rollout.required_versions else "%s"
        keep_sent_sql = (
            f"AND NOT COALESCE(s.target_rollout_id = %s AND s.target_tag = {sent_tag}, FALSE)"
        )
        keep_sent_params = [target_rollout_id]
        if not rollout.required_versions:
            keep_sent_params.append(rollout.new_tag)
    sql = f"""
        UPDATE {_SERVICES} AS s
        SET previous_image = s.target_image, previous_tag = s.target_tag,
            previous_digest = s.target_digest, target_changed_at = %s, {target_sql},
            update_strategy = %s, stop_timeout_seconds = %s
        FROM {_ROWS} AS rd
        WHERE rd.rollout_id = %s AND rd.step = %s
          AND s.device_id = rd.device_id AND s.name = rd.service
          AND {still_ours} AND NOT s.pinned {keep_sent_sql}
    """
    params = [
        connection.ops.adapt_datetimefield_value(now),
        *target_params,
        rollout.device_update_strategy,
        rollout.stop_timeout_seconds,
        rollout_id,
        step,
        *still_ours_params,
        *keep_sent_params,
    ]
    if connection.vendor == "postgresql":
        # The history of exactly the services the UPDATE changed, in the
        # same statement: no second look for them.
        history_record_returning(
            changing_sql=sql + _RETURNING_TARGETS,
            params=params,
            source=history_source,
            now=now,
            rollout_id=rollout.pk,
        )
        return
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    # The services just rewritten are those of the step whose target changed now.
    changed = RolloutDevice.objects.filter(
        rollout=rollout, step=step, device_id=OuterRef("device_id"), service=OuterRef("name")
    )
    history_record(
        services=DeviceService.objects.filter(Exists(changed), target_changed_at=now),
        source=history_source,
        now=now,
        rollout_id=rollout.pk,
    )


_RETURNING_TARGETS = (
    " RETURNING s.device_id, s.name, s.target_image, s.target_tag, s.target_digest"
)


def bump_target_versions(rollout: Rollout, *, step: int) -> int:
    """Grow by one the target_version of each device with a row changed at
    `step` (once, however many of its services the step changed).

    The rows are locked first, in id order, so that two writers bumping
    shared devices (rollouts of two images) cannot deadlock; then updated
    in the same statement, joined to the locked ids. The lock is the one
    the UPDATE takes anyway (FOR NO KEY UPDATE): inserts elsewhere that
    only reference the device (their foreign key checks) are not held up.
    Every writer locks a device's services before the device row (see
    devices.services), and the caller has rewritten the services already.
    Returns how many devices were bumped."""
    lock = ""
    if connection.features.has_select_for_update:
        no_key = connection.features.has_select_for_no_key_update
        lock = "FOR NO KEY UPDATE" if no_key else "FOR UPDATE"
    sql = f"""
        UPDATE {_DEVICES} AS d SET target_version = d.target_version + 1
        FROM (
            SELECT v.id FROM {_DEVICES} v
            WHERE v.id IN (
                SELECT rd.device_id FROM {_ROWS} rd WHERE rd.rollout_id = %s AND rd.step = %s
            )
            ORDER BY v.id {lock}
        ) AS locked
        WHERE d.id = locked.id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [_rollout_id(rollout), step])
        return cursor.rowcount


def _rollout_id(rollout: Rollout):
    return Rollout._meta.pk.get_db_prep_value(rollout.pk, connection)
