"""Everything that changes fleets and devices.

The rollout engine changes device targets in bulk with its own set-based SQL;
the functions here are for one device at a time (API, agent endpoints).
"""

import functools
import uuid as uuid_lib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from .history import history_record
from .keys import hash_key, new_key
from .models import (
    Device,
    DeviceService,
    DeviceTag,
    Fleet,
    FleetAuditAction,
    FleetAuditEvent,
    FleetMembership,
    HistorySource,
    ServiceHistory,
)
from .prepared import prepared_cursor


@dataclass(frozen=True)
class ServiceTarget:
    """What a service should run; `image` is a normalized repository."""

    image: str
    tag: str
    digest: str | None = None


# What an agent may say about a service: {"image", "tag", "digest", "status",
# "health"}, only the keys it sent, `image` normalized.
ServiceReport = dict[str, str | None]


@dataclass(frozen=True)
class ServiceChange:
    """What `PATCH /devices/{uuid}/` asks of one service: a new target (any
    of image, tag, digest; the rest kept from the current target) and/or a
    pin. All None: nothing."""

    image: str | None = None
    tag: str | None = None
    digest: str | None = None
    pinned: bool | None = None

    @property
    def sets_target(self) -> bool:
        return any(value is not None for value in (self.image, self.tag, self.digest))


class DeviceAlreadyExists(Exception):
    pass


class UnknownService(Exception):
    """A change names a service the device has no target for, without an image."""


class NoPreviousVersion(Exception):
    """A rollback found nothing to go back to."""


class FleetNotEmpty(Exception):
    pass


class FleetExists(Exception):
    pass


def fleet_create(*, slug: str, name: str) -> tuple[Fleet, str]:
    """Create a fleet; returns it with its provisioning key (shown once).
    A taken slug raises FleetExists: the unique index decides, so two
    requests racing for one slug cannot both succeed."""
    key = new_key()
    try:
        # A savepoint: a duplicate leaves the outer transaction usable.
        with transaction.atomic():
            fleet = Fleet.objects.create(slug=slug, name=name, provisioning_key_hash=hash_key(key))
    except IntegrityError as exc:
        raise FleetExists(f"A fleet with slug {slug!r} already exists.") from exc
    return fleet, key


@transaction.atomic
def fleet_rotate_key(*, fleet: Fleet, actor: str, now: datetime | None = None) -> str:
    """A new provisioning key (returned, shown once). Registration looks the
    key's hash up on every request, so the old key stops working at once."""
    key = new_key()
    Fleet.objects.filter(pk=fleet.pk).update(provisioning_key_hash=hash_key(key))
    _audit(fleet=fleet, action=FleetAuditAction.KEY_ROTATED, actor=actor, now=now)
    return key


class MembershipExists(Exception):
    pass


@transaction.atomic
def membership_add(
    *, fleet: Fleet, user, role: str, actor: str, now: datetime | None = None
) -> FleetMembership:
    try:
        # A savepoint: a duplicate leaves the outer transaction usable.
        with transaction.atomic():
            membership = FleetMembership.objects.create(fleet=fleet, user=user, role=role)
    except IntegrityError as exc:
        raise MembershipExists(
            f"{user.get_username()!r} is already a member of {fleet.slug!r}."
        ) from exc
    _audit(
        fleet=fleet,
        action=FleetAuditAction.MEMBER_ADDED,
        actor=actor,
        subject=user.get_username(),
        data={"role": role},
        now=now,
    )
    return membership


@transaction.atomic
def membership_change_role(
    *, membership: FleetMembership, role: str, actor: str, now: datetime | None = None
) -> FleetMembership:
    old_role = membership.role
    if role == old_role:
        return membership
    membership.role = role
    membership.save(update_fields=["role"])
    _audit(
        fleet=membership.fleet,
        action=FleetAuditAction.MEMBER_CHANGED,
        actor=actor,
        subject=membership.user.get_username(),
        data={"role": role, "previous_role": old_role},
        now=now,
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: FleetMembership, actor: str, now: datetime | None = None) -> None:
    _audit(
        fleet=membership.fleet,
        action=FleetAuditAction.MEMBER_REMOVED,
        actor=actor,
        subject=membership.user.get_username(),
        data={"previous_role": membership.role},
        now=now,
    )
    membership.delete()


def _audit(
    *,
    fleet: Fleet,
    action: str,
    actor: str,
    subject: str = "",
    data: dict | None = None,
    now: datetime | None = None,
) -> FleetAuditEvent:
    return FleetAuditEvent.objects.create(
        fleet=fleet,
        fleet_slug=fleet.slug,
        action=action,
        actor=actor,
        subject=subject,
        data=data or {},
        timestamp=now or timezone.now(),
    )


def fleet_delete(*, fleet: Fleet) -> None:
    if fleet.devices.exists():
        raise FleetNotEmpty(f"Fleet {fleet.slug!r} still has devices; delete or move them first.")
    fleet.delete()


@transaction.atomic
def device_create(
    *,
    fleet: Fleet,
    uuid: uuid_lib.UUID | None = None,
    name: str = "",
    tags: list[str] | tuple[str, ...] = (),
    targets: dict[str, ServiceTarget] | None = None,
    now: datetime | None = None,
) -> tuple[Device, str]:
    """Create a device; returns it with its api key (shown once)."""
    now = now or timezone.now()
    key = new_key()
    try:
        # A savepoint, so a duplicate uuid leaves the outer transaction usable.
        with transaction.atomic():
            device = Device.objects.create(
                uuid=uuid or uuid_lib.uuid4(), name=name, fleet=fleet, api_key_hash=hash_key(key)
            )
    except IntegrityError as exc:
        raise DeviceAlreadyExists(f"A device with uuid {uuid} already exists.") from exc
    DeviceTag.objects.bulk_create(DeviceTag(device=device, name=tag) for tag in set(tags))
    DeviceService.objects.bulk_create(
        DeviceService(
            device=device,
            name=service,
            target_image=target.image,
            target_tag=target.tag,
            target_digest=target.digest,
            target_changed_at=now,
        )
        for service, target in (targets or {}).items()
    )
    if targets:
        history_record(
            services=DeviceService.objects.filter(device=device),
            source=HistorySource.REGISTRATION,
            now=now,
        )
    return device, key


@transaction.atomic
def device_update(
    *,
    device: Device,
    name: str | None = None,
    tags: list[str] | None = None,
    services: dict[str, ServiceChange] | None = None,
    now: datetime | None = None,
) -> Device:
    # Targets first: every writer locks a device's services before its device
    # row (the engine, reports, this), so none of them can deadlock another.
    if services:
        device_change_services(device_id=device.pk, changes=services, now=now)
        device.refresh_from_db(fields=["target_version"])
    if tags is not None:
        device_set_tags(device=device, tags=tags)
    if name is not None and name != device.name:
        device.name = name
        device.save(update_fields=["name"])
    return device


def device_set_tags(*, device: Device, tags: list[str]) -> None:
    wanted = set(tags)
    device.tag_set.exclude(name__in=wanted).delete()
    DeviceTag.objects.bulk_create(
        (DeviceTag(device=device, name=tag) for tag in wanted), ignore_conflicts=True
    )


@transaction.atomic
def device_set_targets(
    *,
    device_id: int,
    targets: dict[str, ServiceTarget],
    now: datetime | None = None,
    source: str = HistorySource.MANUAL,
    rollout_id=None,
) -> None:
    """A manual deployment: the named services get a new target, the old one
    becomes the previous one, and `target_version` grows once. Each change
    adds a history row with `source`."""
    now = now or timezone.now()
    # Rows first (a report may have created some already), so that every
    # target change below is one UPDATE that keeps the old target as previous.
    DeviceService.objects.bulk_create(
        (DeviceService(device_id=device_id, name=service) for service in sorted(targets)),
        ignore_conflicts=True,
    )
    # In name order, like reports: two writers locking the same services in
    # different orders would deadlock.
    for service, target in sorted(targets.items()):
        DeviceService.objects.filter(device_id=device_id, name=service).update(
            previous_image=F("target_image"),
            previous_tag=F("target_tag"),
            previous_digest=F("target_digest"),
            target_image=target.image,
            target_tag=target.tag,
            target_digest=target.digest,
            target_rollout_id=None,
            target_changed_at=now,
        )
    history_record(
        services=DeviceService.objects.filter(device_id=device_id, name__in=list(targets)),
        source=source,
        now=now,
        rollout_id=rollout_id,
    )
    Device.objects.filter(pk=device_id).update(target_version=F("target_version") + 1)


@transaction.atomic
def device_change_services(
    *, device_id: int, changes: dict[str, ServiceChange], now: datetime | None = None
) -> None:
    """PATCH of services: new targets (a manual deployment, or `pin` when it
    pins), then pins set or cleared. Unpinning leaves the target as it is.
    Raises UnknownService, before writing anything, for a service without a
    target that the change gives no image for."""
    now = now or timezone.now()
    current = {
        row.name: row
        for row in DeviceService.objects.filter(device_id=device_id, name__in=list(changes))
    }
    targets, pinning = {}, set()
    for name, change in sorted(changes.items()):
        row = current.get(name)
        if change.sets_target:
            targets[name] = _merged_target(name, change, row)
            if change.pinned:
                pinning.add(name)
        elif row is None or row.target_image is None:
            raise UnknownService(f"The device has no service {name!r}.")
    manual = {name: target for name, target in targets.items() if name not in pinning}
    if manual:
        device_set_targets(device_id=device_id, targets=manual, now=now)
    if pinning:
        pinned = {name: targets[name] for name in pinning}
        device_set_targets(device_id=device_id, targets=pinned, now=now, source=HistorySource.PIN)
    for pinned in (True, False):
        names = [name for name, change in changes.items() if change.pinned is pinned]
        if names:
            DeviceService.objects.filter(device_id=device_id, name__in=names).update(pinned=pinned)


def _merged_target(name: str, change: ServiceChange, row: DeviceService | None) -> ServiceTarget:
    image = change.image or (row.target_image if row else None)
    if image is None:
        raise UnknownService(f"The device has no service {name!r}; give its image.")
    if change.image and change.image != (row.target_image if row else None):
        # Another image: nothing of the old target carries over.
        return ServiceTarget(image=image, tag=change.tag or "latest", digest=change.digest)
    tag = change.tag or row.target_tag
    # A new tag without a digest names no digest; the worker fills it in.
    digest = change.digest if (change.digest or change.tag) else row.target_digest
    return ServiceTarget(image=image, tag=tag, digest=digest)


@transaction.atomic
def device_rollback(
    *,
    device_id: int,
    service: str | None = None,
    tag: str | None = None,
    digest: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Send services back: to a named tag of the same image, or to the newest
    history entry whose version differs from the current target. Returns the
    services changed; raises UnknownService or NoPreviousVersion (nothing
    would change) before writing anything."""
    now = now or timezone.now()
    rows = DeviceService.objects.filter(device_id=device_id, target_image__isnull=False)
    if service is not None:
        rows = rows.filter(name=service)
        if not rows.exists():
            raise UnknownService(f"The device has no service {service!r}.")
    targets = {}
    for row in rows.order_by("name"):
        target = (
            _named_version(row, tag, digest) if tag else _previous_version(row)
        )
        if target is not None and _version(target) != _version(row):
            targets[row.name] = target
    if not targets:
        raise NoPreviousVersion("No service has a previous version to go back to.")
    device_set_targets(
        device_id=device_id, targets=targets, now=now, source=HistorySource.ROLLBACK
    )
    return sorted(targets)


def _version(target) -> tuple:
    if isinstance(target, DeviceService):
        return (target.target_image, target.target_tag, target.target_digest)
    return (target.image, target.tag, target.digest)


def _previous_version(row: DeviceService) -> ServiceTarget | None:
    entries = ServiceHistory.objects.filter(device_id=row.device_id, service=row.name).order_by(
        "-deployed_at", "-id"
    )
    current = _version(row)
    for entry in entries.values_list("image", "tag", "digest"):
        if entry != current:
            return ServiceTarget(*entry)
    # Targets set before the history existed: the previous target still knows.
    if row.previous_image and (row.previous_image, row.previous_tag, row.previous_digest) != current:
        return ServiceTarget(row.previous_image, row.previous_tag, row.previous_digest)
    return None


def _named_version(row: DeviceService, tag: str, digest: str | None) -> ServiceTarget:
    if digest is None:
        # The digest this tag had when the device ran it, if the history knows.
        digest = (
            ServiceHistory.objects.filter(
                device_id=row.device_id,
                service=row.name,
                image=row.target_image,
                tag=tag,
                digest__isnull=False,
            )
            .order_by("-deployed_at", "-id")
            .values_list("digest", flat=True)
            .first()
        )
    return ServiceTarget(image=row.target_image, tag=tag, digest=digest)


def _forget_stale_health(report: ServiceReport) -> ServiceReport:
    """A report that names what runs (image, tag or digest) describes the
    container afresh: status or health it leaves out are unknown, not the
    stored ones. Otherwise a new release would inherit the old container's
    health, and the engine would judge it by that."""
    if not report.keys() & {"image", "tag", "digest"}:
        return report
    return {"status": None, "health": None, **report}


def device_report_state(
    *,
    device_id: int,
    target_version: int | None,
    services: dict[str, ServiceReport],
    now: datetime | None = None,
) -> None:
    """Store what the agent runs. The engine judges it later, in bulk.

    A field a report leaves out keeps its stored value (an explicit null
    clears it), so a partial report never erases what an earlier one said.

    On PostgreSQL one statement, so it is atomic without a transaction: an
    upsert of the services per shape of report (agents send one shape), then
    the device row, which waits for the services (see _report_sql): the
    order every writer keeps, services first, then the device.
    """
    at = connection.ops.adapt_datetimefield_value(now or timezone.now())
    by_fields: dict[tuple[str, ...], dict[str, ServiceReport]] = defaultdict(dict)
    # Services in name order (see device_set_targets), each group likewise.
    for service, report in sorted(services.items()):
        report = _forget_stale_health(report)
        by_fields[tuple(sorted(report))][service] = report
    shape = tuple((fields, len(reports)) for fields, reports in by_fields.items())
    upsert_params = [
        [value for name, report in group.items() for value in _service_row(device_id, name, report, at)]
        for group in by_fields.values()
    ]
    update_params = [at, at, *([] if target_version is None else [target_version]), device_id]
    statements = _report_sql(connection.vendor, shape, target_version is not None)
    if connection.vendor == "postgresql":
        params = [value for upsert in upsert_params for value in upsert] + update_params
        with prepared_cursor() as cursor:
            cursor.execute(statements[0], params)
        return
    # SQLite (bin/run) has no INSERT inside WITH: the same statements one
    # after another, in a transaction.
    with transaction.atomic(), connection.cursor() as cursor:
        for sql, params in zip(statements, [*upsert_params, update_params], strict=True):
            cursor.execute(sql, params)


# Every column of a service row but the key: an insert names them all, so a
# column added later gets its model default without touching this code.
_SERVICE_FIELDS = [field for field in DeviceService._meta.concrete_fields if not field.primary_key]
_SERVICE_COLUMNS = ", ".join(connection.ops.quote_name(f.column) for f in _SERVICE_FIELDS)
_SERVICE_ROW = "(" + ", ".join("%s" for _ in _SERVICE_FIELDS) + ")"
_SERVICE_INDEX = {field.attname: n for n, field in enumerate(_SERVICE_FIELDS)}


def _has_callable_default(field) -> bool:
    # A field without a default has NOT_PROVIDED, a class, as its `default`.
    return field.has_default() and callable(field.default)


# The model defaults as the database takes them, prepared once; a callable
# default (none today) gives every row a value of its own.
_CALLABLE_DEFAULTS = [
    (n, field) for n, field in enumerate(_SERVICE_FIELDS) if _has_callable_default(field)
]
_DEFAULT_ROW = [
    None
    if _has_callable_default(field)
    else field.get_db_prep_save(field.get_default(), connection)
    for field in _SERVICE_FIELDS
]


def _service_row(device_id: int, name: str, report: ServiceReport, at) -> list:
    """The values of a new service row: the report on top of the model defaults.
    `at` is already the database's value; the reported values are validated
    strings or None, which every backend takes as they are."""
    row = _DEFAULT_ROW.copy()
    for n, field in _CALLABLE_DEFAULTS:
        row[n] = field.get_db_prep_save(field.get_default(), connection)
    row[_SERVICE_INDEX["device_id"]] = device_id
    row[_SERVICE_INDEX["name"]] = name
    row[_SERVICE_INDEX["reported_at"]] = at
    for field, value in report.items():
        row[_SERVICE_INDEX[f"reported_{field}"]] = value
    return row


def _services_upsert_sql(fields: tuple[str, ...], rows: int) -> str:
    """INSERT .. ON CONFLICT of services reported with the same fields: a
    service we never targeted is kept too; a known one gets the fields sent."""
    updates = ", ".join(f"reported_{field} = EXCLUDED.reported_{field}" for field in (*fields, "at"))
    values = ", ".join(_SERVICE_ROW for _ in range(rows))
    return (
        f"INSERT INTO {DeviceService._meta.db_table} ({_SERVICE_COLUMNS}) VALUES {values} "
        f"ON CONFLICT (device_id, name) DO UPDATE SET {updates}"
    )


def _device_report_update_sql(with_version: bool) -> str:
    version = ", reported_target_version = %s" if with_version else ""
    return (
        f"UPDATE {Device._meta.db_table} SET last_report_at = %s, last_seen_at = %s{version} "
        "WHERE id = %s"
    )


@functools.lru_cache(maxsize=256)
def _report_sql(
    vendor: str, shape: tuple[tuple[tuple[str, ...], int], ...], with_version: bool
) -> tuple[str, ...]:
    """The SQL of a report of this shape ((fields, number of services) per
    upsert), built once: its parameters are the upserts' rows, in order, then
    the device update's.

    PostgreSQL: one statement, the upserts as data-modifying WITH queries of
    the device UPDATE. An uncorrelated subquery in its WHERE runs once,
    before any row is read, so the services are written (and locked) before
    the device row. Elsewhere: the statements, to run in order."""
    upserts = [_services_upsert_sql(fields, rows) for fields, rows in shape]
    update = _device_report_update_sql(with_version)
    if vendor != "postgresql":
        return (*upserts, update)
    if not upserts:
        return (update,)
    ctes = ", ".join(f"upsert_{n} AS ({sql} RETURNING 1)" for n, sql in enumerate(upserts))
    waits = "".join(f" AND (SELECT count(*) FROM upsert_{n}) >= 0" for n in range(len(upserts)))
    return (f"WITH {ctes} {update}{waits}",)
