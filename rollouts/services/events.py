"""Rollout events: one row per transition, written in the transition's transaction."""

from datetime import datetime

from django.db import connection

from devices.models import Device

from ..models import DeviceStatus, EventType, Rollout, RolloutDevice, RolloutEvent
from ..streams.wakeup import events_written


def event_record(
    *,
    rollout: Rollout,
    event_type: EventType,
    message: str,
    now: datetime,
    data: dict | None = None,
) -> RolloutEvent:
    event = RolloutEvent.objects.create(
        rollout=rollout, event_type=event_type, message=message, data=data or {}, timestamp=now
    )
    events_written()
    return event


# Per-device event of a row changed at a step, chosen by the row's new status.
DEVICE_EVENT_BY_STATUS = {
    "scheduled": (EventType.DEVICE_SCHEDULED, "scheduled for the new image"),
    "updated": (EventType.DEVICE_UPDATED, "runs the new image"),
    "healthy": (EventType.HEALTH_CHECK_PASSED, "is healthy on the new image"),
    "rolled_back": (EventType.DEVICE_ROLLED_BACK, "sent back to its previous image"),
    "deferred": (EventType.DEVICE_DEFERRED, "has not polled since it was sent the new image: deferred"),
}
# Events a step writes for every row it changed, whatever the row's status.
EVENT_FOR_EVERY_ROW = {
    EventType.DEVICE_RETRIED: "sent the new image again",
}
FAILED_EVENT_BY_REASON = {
    "unhealthy": (EventType.HEALTH_CHECK_FAILED, "failed its health check"),
    "crashed": (EventType.DEVICE_FAILED, "crashed on the new image"),
    "timeout": (EventType.DEVICE_FAILED, "gave no verdict before the timeout"),
}


def _case(column: str, mapping: dict, index: int) -> tuple[str, list]:
    sql = " ".join("WHEN %s THEN %s" for _ in mapping)
    params = [value for key, entry in mapping.items() for value in (key, str(entry[index]))]
    return f"CASE {column} {sql} END", params


def events_for_step(
    *, rollout: Rollout, step: int, now: datetime, event_type: EventType | None = None
) -> int:
    """Insert one event per device row that the transition `step` changed:
    chosen by the row's status, or `event_type` (EVENT_FOR_EVERY_ROW) for
    every row.

    INSERT ... SELECT: the number of statements does not grow with the number
    of devices. Returns the number of events written.
    """
    rows = RolloutDevice._meta.db_table
    devices = Device._meta.db_table
    events = RolloutEvent._meta.db_table
    by_status = {**DEVICE_EVENT_BY_STATUS}
    if event_type is not None:
        # The same event whatever the status: a CASE over the statuses a
        # row can have, each mapped to it.
        by_status = {
            status: (event_type, EVENT_FOR_EVERY_ROW[event_type]) for status in DeviceStatus.values
        }
    status_type, status_type_params = _case("rd.status", by_status, 0)
    status_msg, status_msg_params = _case("rd.status", by_status, 1)
    reason_type, reason_type_params = _case("rd.failure_reason", FAILED_EVENT_BY_REASON, 0)
    reason_msg, reason_msg_params = _case("rd.failure_reason", FAILED_EVENT_BY_REASON, 1)
    json_cast = "::jsonb" if connection.vendor == "postgresql" else ""
    # Service names are restricted to [A-Za-z0-9_.-] at every edge, and the
    # reason is an enum, so concatenating them into JSON text is safe.
    data = (
        "('{\"service\": \"' || rd.service || '\", \"batch\": ' "
        "|| COALESCE(CAST(rd.batch AS TEXT), 'null') "
        "|| ', \"failure_reason\": \"' || rd.failure_reason || '\"}')"
    )
    sql = f"""
        INSERT INTO {events} (rollout_id, event_type, device_uuid, message, data, timestamp)
        SELECT rd.rollout_id,
               CASE WHEN rd.status = 'failed' AND %s THEN {reason_type} ELSE {status_type} END,
               d.uuid,
               COALESCE(NULLIF(d.name, ''), CAST(d.uuid AS TEXT)) || '/' || rd.service || ' '
                 || CASE WHEN rd.status = 'failed' AND %s THEN {reason_msg}
                         ELSE {status_msg} END,
               {data}{json_cast},
               %s
        FROM {rows} rd JOIN {devices} d ON d.id = rd.device_id
        WHERE rd.rollout_id = %s AND rd.step = %s
    """
    by_reason = event_type is None
    params = [
        by_reason,
        *reason_type_params,
        *status_type_params,
        by_reason,
        *reason_msg_params,
        *status_msg_params,
        now,
        Rollout._meta.pk.get_db_prep_value(rollout.pk, connection),
        step,
    ]
    return _insert_events(sql, params)


def events_for_skips(*, rollout: Rollout, now: datetime, batch: int | None = None) -> int:
    """Insert one `image.device_skipped` event per row a rule left out (a
    `skip_reason`): those of the fan-out (`batch` None: skipped rows have no
    batch) or those a start of `batch` found pinned or already current since.
    Rows a cancel or a supersede let go have no reason: the rollout's own
    event tells. One INSERT ... SELECT, whatever the number of devices."""
    rows = RolloutDevice._meta.db_table
    devices = Device._meta.db_table
    events = RolloutEvent._meta.db_table
    json_cast = "::jsonb" if connection.vendor == "postgresql" else ""
    # Service names are restricted to [A-Za-z0-9_.-] at every edge and the
    # reason is an enum: concatenating them into JSON text is safe.
    data = (
        "('{\"service\": \"' || rd.service || '\", \"batch\": ' "
        "|| COALESCE(CAST(rd.batch AS TEXT), 'null') "
        "|| ', \"skip_reason\": \"' || rd.skip_reason || '\"}')"
    )
    in_batch = "rd.batch IS NULL" if batch is None else "rd.batch = %s"
    sql = f"""
        INSERT INTO {events} (rollout_id, event_type, device_uuid, message, data, timestamp)
        SELECT rd.rollout_id, %s, d.uuid,
               COALESCE(NULLIF(d.name, ''), CAST(d.uuid AS TEXT)) || '/' || rd.service
                 || ' skipped (' || rd.skip_reason || ')',
               {data}{json_cast}, %s
        FROM {rows} rd JOIN {devices} d ON d.id = rd.device_id
        WHERE rd.rollout_id = %s AND rd.status = 'skipped' AND rd.skip_reason IS NOT NULL
          AND {in_batch}
    """
    params = [
        str(EventType.DEVICE_SKIPPED),
        now,
        Rollout._meta.pk.get_db_prep_value(rollout.pk, connection),
        *([] if batch is None else [batch]),
    ]
    return _insert_events(sql, params)


def _insert_events(sql: str, params: list) -> int:
    """Run an INSERT of events; wake the streams when it wrote any."""
    with connection.cursor() as cursor:
        cursor.execute(sql, _adapt(params))
        written = cursor.rowcount
    if written:
        events_written()
    return written


def _adapt(params: list) -> list:
    """Datetimes need the backend's own adaptation in raw SQL."""
    ops = connection.ops
    return [ops.adapt_datetimefield_value(p) if isinstance(p, datetime) else p for p in params]
