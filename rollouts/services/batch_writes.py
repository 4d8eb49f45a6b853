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
from django.db.models import QuerySet

from devices.models import DeviceService

from ..models import DeviceStatus, Rollout, RolloutDevice

_ROWS = RolloutDevice._meta.db_table
_SERVICES = DeviceService._meta.db_table


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


def _rollout_id(rollout: Rollout):
    return Rollout._meta.pk.get_db_prep_value(rollout.pk, connection)
