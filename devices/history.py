"""Per-service history of device targets: every target change adds a row.

Writers pass the `DeviceService` rows whose target just changed, as a
queryset: the history is written set-based whatever the number of rows
(close the rows they replace, add the new ones, trim each service to the
newest DEVICE_HISTORY_KEEP), so the engine can record a batch of 50,000
devices as cheaply as one device: one statement on PostgreSQL, three on
SQLite (which has no data-modifying WITH queries nor LATERAL).
"""

from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from .models import DeviceService, ServiceHistory


def history_record(
    *, services: QuerySet, source: str, now: datetime, rollout_id=None
) -> None:
    """Add a history row for the current target of each of `services`."""
    # No ORDER BY in the subqueries: the model's ordering would only sort.
    services = services.order_by()
    if connection.vendor == "postgresql":
        targets = services.values("device_id", "name", "target_image", "target_tag", "target_digest")
        _record_postgresql(*_sql(targets), source=source, now=now, rollout_id=rollout_id)
        return
    pairs_sql, pairs_params = _sql(services.values("device_id", "name"))
    targets_sql, targets_params = _sql(
        services.filter(target_image__isnull=False).values(
            "device_id", "name", "target_image", "target_tag", "target_digest"
        )
    )
    history = ServiceHistory._meta.db_table
    rollout = ServiceHistory._meta.get_field("rollout_id").get_db_prep_value(
        rollout_id, connection
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {history} SET replaced_at = %s
                WHERE replaced_at IS NULL AND (device_id, service) IN ({pairs_sql})""",
            [now, *pairs_params],
        )
        cursor.execute(
            f"""INSERT INTO {history} (device_id, service, image, tag, digest, source,
                                       rollout_id, deployed_at)
                SELECT t.device_id, t.name, t.target_image, t.target_tag, t.target_digest,
                       %s, %s, %s
                FROM ({targets_sql}) t""",
            [source, rollout, now, *targets_params],
        )
        _trim(cursor, pairs_sql, pairs_params)


def history_record_returning(
    *, changing_sql: str, params, source: str, now: datetime, rollout_id=None
) -> None:
    """PostgreSQL only: run `changing_sql`, an UPDATE of device services that
    RETURNs the device_id, name, target_image, target_tag and target_digest
    of the rows it changed, and add their history in the same statement.
    Exactly the rows it changed, without selecting them again."""
    _record_postgresql(changing_sql, params, source=source, now=now, rollout_id=rollout_id)


def _record_postgresql(
    targets_sql: str, targets_params, *, source: str, now: datetime, rollout_id
) -> None:
    """One statement: the targets read once (`targets_sql`, a MATERIALIZED
    WITH query: it may be an expensive selection, or the UPDATE that
    changes them), then the replaced rows closed, the new rows added and
    each service trimmed to the newest DEVICE_HISTORY_KEEP.

    Every part sees the rows as they were before the statement: the trim
    does not see the row being added, which goes first (the newest), so a
    service that gets one keeps KEEP - 1 of its older rows. The trim reads
    each service's rows newest first from history_service_idx (device,
    service, deployed_at DESC, id DESC) and skips the ones it keeps: a short
    index scan per service instead of ranking all its rows."""
    history = ServiceHistory._meta.db_table
    rollout = ServiceHistory._meta.get_field("rollout_id").get_db_prep_value(
        rollout_id, connection
    )
    keep = settings.DEVICE_HISTORY_KEEP
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH targets AS MATERIALIZED ({targets_sql}),
                closed AS (
                    UPDATE {history} h SET replaced_at = %s
                    FROM targets t
                    WHERE h.replaced_at IS NULL AND h.device_id = t.device_id
                      AND h.service = t.name
                ),
                added AS (
                    INSERT INTO {history} (device_id, service, image, tag, digest, source,
                                           rollout_id, deployed_at)
                    SELECT t.device_id, t.name, t.target_image, t.target_tag, t.target_digest,
                           %s, %s, %s
                    FROM targets t WHERE t.target_image IS NOT NULL
                )
                DELETE FROM {history} WHERE id IN (
                    SELECT old.id FROM targets t CROSS JOIN LATERAL (
                        SELECT h.id FROM {history} h
                        WHERE h.device_id = t.device_id AND h.service = t.name
                        ORDER BY h.deployed_at DESC, h.id DESC
                        OFFSET CASE WHEN t.target_image IS NULL THEN %s ELSE %s END
                    ) old
                )""",
            [*targets_params, now, source, rollout, now, keep, keep - 1],
        )


def _trim(cursor, pairs_sql: str, pairs_params) -> None:
    # Only the services just written can have grown past the limit.
    history = ServiceHistory._meta.db_table
    cursor.execute(
        f"""DELETE FROM {history} WHERE id IN (
                SELECT id FROM (
                    SELECT id, ROW_NUMBER() OVER (
                        PARTITION BY device_id, service ORDER BY deployed_at DESC, id DESC
                    ) AS newest
                    FROM {history}
                    WHERE (device_id, service) IN ({pairs_sql})
                ) ranked
                WHERE ranked.newest > %s
            )""",
        [*pairs_params, settings.DEVICE_HISTORY_KEEP],
    )


def history_fill_digest(*, service: DeviceService, digest: str) -> None:
    """The worker learned the digest of a target set by tag: the version is
    the same, so its history row gains the digest instead of a new row."""
    ServiceHistory.objects.filter(
        device_id=service.device_id,
        service=service.name,
        replaced_at__isnull=True,
        image=service.target_image,
        tag=service.target_tag,
        digest__isnull=True,
    ).update(digest=digest)


def _sql(queryset: QuerySet) -> tuple[str, tuple]:
    return queryset.query.get_compiler(connection=connection).as_sql()
