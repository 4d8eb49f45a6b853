"""Per-service history of device targets: every target change adds a row.

Writers pass the `DeviceService` rows whose target just changed, as a
queryset: the history is written in three set-based statements whatever the
number of rows (close the rows they replace, add the new ones, trim each
service to the newest DEVICE_HISTORY_KEEP), so the engine can record a batch
of 50,000 devices as cheaply as one device.
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
