"""Reads of devices that are more than a `.get()`."""

import json
import uuid as uuid_lib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    NotSupportedError,
    OperationalError,
    connections,
)
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .keys import hash_key
from .prepared import prepared_cursor
from .models import Device, DeviceService, Fleet


@dataclass(frozen=True, slots=True)
class AuthenticatedDevice:
    """The columns the agent endpoints need, fetched in the authenticating statement."""

    id: int
    uuid: uuid_lib.UUID
    target_version: int
    last_seen_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReportingDevice(AuthenticatedDevice):
    """A device and how many services it has stored (the report's cap check)."""

    service_count: int


@dataclass(frozen=True, slots=True)
class PolledDevice(AuthenticatedDevice):
    """A device and, unless the agent's ETag is current, the body of its target
    state as JSON text: all of it read by one statement, from one snapshot."""

    services_json: str | None


_DEVICE_COLUMNS = "d.id, d.uuid, d.target_version, d.last_seen_at"
_DEVICES = Device._meta.db_table
_SERVICES = DeviceService._meta.db_table

# The one place that says what a poll tells a device about each service it
# should run: JSON key -> SQL expression over the service row `s`. The poll
# statement builds each service's JSON from its row with these (add a key
# here to add it to the polled state).
POLLED_SERVICE_FIELDS = {
    "image": "s.target_image",
    "tag": "s.target_tag",
    "digest": "s.target_digest",
    "rollout_id": "s.target_rollout_id",
    # Only ever changed together with the target, so target_version (and the
    # ETag) changes with them.
    "update_strategy": "s.update_strategy",
    "stop_timeout_seconds": "s.stop_timeout_seconds",
}


# JSON aggregation is spelled differently by PostgreSQL and by SQLite (bin/run).
_JSON_FUNCTIONS = {
    "postgresql": ("json_object_agg", "json_build_object"),
    "sqlite": ("json_group_object", "json_object"),
}


def _polled_services_sql() -> str:
    aggregate, build = _JSON_FUNCTIONS[connections[DEFAULT_DB_ALIAS].vendor]
    fields = ", ".join(f"'{key}', {expression}" for key, expression in POLLED_SERVICE_FIELDS.items())
    return (
        f"SELECT CAST(COALESCE({aggregate}(s.name, {build}({fields})), '{{}}') AS text) "
        f"FROM {_SERVICES} s WHERE s.device_id = d.id AND s.target_image IS NOT NULL"
    )


def _poll_sql(known_versions: int) -> str:
    # The services are read only when the agent's ETag is stale (a CASE
    # evaluates only the branch it takes), in the same statement as the
    # version, so the ETag and the body always agree. A plain SELECT never
    # waits on a row lock: a poll cannot stall behind the engine.
    known = f"d.target_version IN ({', '.join(['%s'] * known_versions)})" if known_versions else "0 = 1"
    return (
        f"SELECT {_DEVICE_COLUMNS}, CASE WHEN %s OR {known} "
        f"THEN NULL ELSE ({_polled_services_sql()}) END "
        f"FROM {_DEVICES} d WHERE d.api_key_hash = %s"
    )


def _device_fields(row: tuple) -> tuple:
    """id, uuid, target_version, last_seen_at as Python values: SQLite (bin/run)
    hands a raw cursor the uuid as text and the time as text or naive UTC."""
    device_id, uuid, target_version, last_seen_at, *rest = row
    if not isinstance(uuid, uuid_lib.UUID):
        uuid = uuid_lib.UUID(uuid)
    if isinstance(last_seen_at, str):
        last_seen_at = parse_datetime(last_seen_at)
    if last_seen_at is not None and timezone.is_naive(last_seen_at):
        last_seen_at = timezone.make_aware(last_seen_at, UTC)
    return (device_id, uuid, target_version, last_seen_at, *rest)


def device_report_for_api_key(api_key: str) -> ReportingDevice | None:
    """The device whose key this is and the number of its stored services."""
    sql = (
        f"SELECT {_DEVICE_COLUMNS}, (SELECT count(*) FROM {_SERVICES} s WHERE s.device_id = d.id) "
        f"FROM {_DEVICES} d WHERE d.api_key_hash = %s"
    )
    row = fetch_one_without_health_check(sql, [hash_key(api_key)], prepared=True)
    return ReportingDevice(*_device_fields(row)) if row else None


def device_services_besides(*, device_id: int, names: list[str]) -> int:
    """How many stored services of the device are not among `names`."""
    return DeviceService.objects.filter(device_id=device_id).exclude(name__in=names).count()


def device_poll_for_api_key(
    api_key: str, *, any_version: bool, known_versions: list[int]
) -> PolledDevice | None:
    """The device whose key this is, with its target state unless the agent
    already has it (`known_versions` are the target versions of the ETags it
    sent; `any_version` for `If-None-Match: *`). One statement, prepared
    (devices.prepared): planning it cost the database more than running it."""
    params = [any_version, *known_versions, hash_key(api_key)]
    row = fetch_one_without_health_check(_poll_sql(len(known_versions)), params, prepared=True)
    if row is None:
        return None
    device = PolledDevice(*_device_fields(row))
    if device.services_json and connections[DEFAULT_DB_ALIAS].vendor == "sqlite":
        device = replace(device, services_json=_dashed_rollout_ids(device.services_json))
    return device


def _dashed_rollout_ids(services_json: str) -> str:
    """SQLite stores a UUID as 32 hex digits; the poll says it with dashes."""
    services = json.loads(services_json)
    for service in services.values():
        if service.get("rollout_id"):
            service["rollout_id"] = str(uuid_lib.UUID(service["rollout_id"]))
    return json.dumps(services)


def fetch_one_without_health_check(sql: str, params: list, prepared: bool = False) -> tuple | None:
    """Run one statement on the default connection, skipping Django's
    connection health check (a `SELECT 1` round trip before the first query
    of every request, CONN_HEALTH_CHECKS); `prepared`: as a prepared
    statement (devices.prepared).

    The agent endpoints find a dead connection the optimistic way instead:
    the statement fails, the connection is closed and the statement runs once
    more on a new one. Only outside a transaction, where nothing is lost.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    connection.health_check_done = True
    try:
        return _fetch_one(connection, sql, params, prepared)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block:
            raise
        connection.close()
        return _fetch_one(connection, sql, params, prepared)
    except NotSupportedError:
        # A prepared statement whose result columns a migration changed
        # ("cached plan must not change result type") fails on its connection
        # until that closes; a new connection prepares it afresh.
        if not prepared or connection.in_atomic_block:
            raise
        connection.close()
        return _fetch_one(connection, sql, params, prepared)


def _fetch_one(connection, sql: str, params: list, prepared: bool) -> tuple | None:
    with prepared_cursor() if prepared else connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def fleet_for_provisioning_key(key: str) -> Fleet | None:
    return Fleet.objects.filter(provisioning_key_hash=hash_key(key)).first()


def online_since(now: datetime | None = None) -> datetime:
    """Devices seen after this moment count as online."""
    now = now or timezone.now()
    window = settings.DEVICE_POLL_INTERVAL_SECONDS * settings.DEVICE_ONLINE_POLL_INTERVALS
    return now - timedelta(seconds=window)


def devices_online(queryset: QuerySet, online: bool, now: datetime | None = None) -> QuerySet:
    is_online = Q(last_seen_at__gte=online_since(now))
    return queryset.filter(is_online) if online else queryset.exclude(is_online)


# "Behind" means: not on the version of the newest completed rollout of the
# image. Only the rollouts app knows that; it registers its selector here when
# Django starts (rollouts/apps.py), so that devices never import rollouts.
_behind_selector = None


def register_behind_selector(selector) -> None:
    global _behind_selector
    _behind_selector = selector


def devices_behind(queryset: QuerySet, image: str) -> QuerySet:
    if _behind_selector is None:
        return queryset.none()
    return _behind_selector(queryset, image)


def devices_with_image(queryset: QuerySet, image: str) -> QuerySet:
    """Devices with a service that targets or runs `image`."""
    services = DeviceService.objects.filter(
        Q(target_image=image) | Q(reported_image=image), device_id=OuterRef("pk")
    )
    return queryset.filter(Exists(services))
