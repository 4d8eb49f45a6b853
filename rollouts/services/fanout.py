"""Creating rollouts for a push and filling them with devices (the fan-out)."""

import copy
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from devices.models import Device, DeviceService
from fleet.queue import enqueue_on_commit

from ..models import (
    ACTIVE_STATUSES,
    SETTINGS_FIELDS,
    DigestSource,
    DeviceStatus,
    EventType,
    ImagePolicy,
    Rollout,
    RolloutDevice,
    RolloutStatus,
    Trigger,
    UpdateStrategy,
)
from ..selectors import affected_services, already_current, image_services, policy_for_push
from .events import event_record
from .transitions import start_locked

# The name of the task in rollouts.tasks that runs `rollout_fan_out`.
FAN_OUT_TASK = "rollouts.fan_out_rollout"


@dataclass(frozen=True)
class PushOutcome:
    status: str  # "rollout_created" | "no_matching_policy" | "no_affected_devices"
    rollout: Rollout | None


def rollout_create_for_push(
    *,
    image: str,
    tag: str,
    digest: str | None,
    trigger: str = Trigger.WEBHOOK,
    policy: ImagePolicy | None = None,
    source: dict | None = None,
    now: datetime | None = None,
) -> PushOutcome:
    """Create the `pending` rollout for a push; devices are added by the fan-out
    task after commit, so the time taken here does not grow with the fleet.

    A webhook push that affects no device creates nothing; a manual trigger
    always creates its rollout (it completes at once when it has no devices).
    """
    now = now or timezone.now()
    policy = policy or policy_for_push(image=image, tag=tag)
    if policy is None:
        return PushOutcome("no_matching_policy", None)
    if trigger == Trigger.WEBHOOK and not _any_device_affected(policy, image, tag, digest):
        return PushOutcome("no_affected_devices", None)
    with transaction.atomic():
        _lock_image(image)
        rollout = _create_rollout_row(policy, image, tag, digest, trigger, now)
        if trigger == Trigger.WEBHOOK:
            event_record(
                rollout=rollout,
                event_type=EventType.WEBHOOK_RECEIVED,
                message=f"Push of {image}:{tag} received",
                now=now,
                data=source or {},
            )
        event_record(
            rollout=rollout,
            event_type=EventType.ROLLOUT_CREATED,
            message=f"Rollout of {image}:{tag} created by policy {policy.pk} ({policy.update_strategy})",
            now=now,
            data={"policy": policy.pk, "trigger": trigger},
        )
        _supersede_active_rollouts(rollout, now)
        # If the broker is down the tick does the fan-out (rollouts_advance_all).
        enqueue_on_commit(FAN_OUT_TASK, str(rollout.pk))
    return PushOutcome("rollout_created", rollout)


def _lock_image(image: str) -> None:
    """Serialize rollout creation per image until commit.

    Two pushes of one image at the same moment would otherwise each miss the
    other's uncommitted rollout when superseding, and both would stay active.
    SQLite needs nothing: its transactions take the write lock at BEGIN.
    """
    if connection.vendor != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(image.encode()).digest()[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _any_device_affected(policy: ImagePolicy, image: str, tag: str, digest: str | None) -> bool:
    filters = {
        "fleet_id": policy.fleet_id,
        "device_tags": policy.device_tags,
        "device_uuids": policy.device_uuids,
    }
    if digest is None and settings.REGISTRY_RESOLVE_DIGESTS:
        # A push without a digest (Docker Hub) may have moved a tag the
        # devices already run: only the registry can tell, and the answer
        # never waits for it. The worker resolves the tag; devices already
        # on its digest are skipped then.
        services = image_services(image=image, **filters).exclude(pinned=True)
    else:
        services = affected_services(image=image, tag=tag, digest=digest, **filters)
    # Walk the (image, tag) index in order and stop at the first hit: a bare
    # EXISTS lets PostgreSQL pick a sequential scan (it assumes matching rows
    # are spread evenly), which reads the whole table when an image's devices
    # were created together. The webhook answer must not grow with the fleet.
    first = services.order_by("target_image", "target_tag").values_list("id", flat=True)[:1]
    return bool(list(first))


def _create_rollout_row(
    policy: ImagePolicy, image: str, tag: str, digest: str | None, trigger: str, now: datetime
) -> Rollout:
    settings = {name: copy.deepcopy(getattr(policy, name)) for name in SETTINGS_FIELDS}
    if policy.update_strategy == UpdateStrategy.AUTO:
        # `auto` is one batch that reaches everyone.
        settings["batch_percentages"] = [100]
    return Rollout.objects.create(
        image=image,
        new_tag=tag,
        new_digest=digest,
        digest_source=_digest_source(trigger) if digest else None,
        policy=policy,
        trigger=trigger,
        strategy=policy.update_strategy,
        fleet_id=policy.fleet_id,
        total_batches=len(settings["batch_percentages"]),
        created_at=now,
        **settings,
    )


def _digest_source(trigger: str) -> str:
    # A digest given with the trigger: the operator's for a manual one, the
    # registry's own notification otherwise.
    return DigestSource.MANUAL if trigger == Trigger.MANUAL else DigestSource.PUSH


def _supersede_active_rollouts(new: Rollout, now: datetime) -> None:
    """End every other active rollout of the image. Devices they touched still
    target the image on another tag, so the new fan-out carries them over.

    The answer to a push must not wait for a tick that holds an old rollout
    while it schedules a large batch: a rollout locked right now is left to
    the fan-out task (`supersede_later`), which may wait for it.
    """
    old_ids = (
        Rollout.objects.filter(image=new.image, status__in=ACTIVE_STATUSES)
        .exclude(pk=new.pk)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    busy = [str(old_id) for old_id in old_ids if not _supersede(old_id, new, now, wait=False)]
    if busy:
        new.supersede_later = busy
        new.save(update_fields=["supersede_later"])


def _supersede_left_for_later(rollout: Rollout, now: datetime) -> None:
    for old_id in rollout.supersede_later:
        _supersede(old_id, rollout, now, wait=True)
    rollout.supersede_later = []
    rollout.save(update_fields=["supersede_later"])


def _supersede(old_id, new: Rollout, now: datetime, *, wait: bool) -> bool:
    """Supersede one rollout if it is still active; False when `wait` is off
    and another transaction holds it."""
    try:
        # A savepoint: a refused NOWAIT must not break the outer transaction.
        # The lock taken inside it is kept until the outer one ends.
        with transaction.atomic():
            old = Rollout.objects.select_for_update(nowait=not wait).filter(pk=old_id).first()
    except OperationalError:
        return False
    if old is None or old.status not in ACTIVE_STATUSES:
        return True
    old.devices.filter(status=DeviceStatus.PENDING).update(status=DeviceStatus.SKIPPED)
    old.status = RolloutStatus.SUPERSEDED
    old.status_reason = f"Superseded by rollout {new.pk} ({new.image}:{new.new_tag})."
    old.superseded_by = new
    old.finished_at = now
    old.next_batch_at = None
    old.save(
        update_fields=["status", "status_reason", "superseded_by", "finished_at", "next_batch_at"]
    )
    event_record(
        rollout=old,
        event_type=EventType.ROLLOUT_SUPERSEDED,
        message=old.status_reason,
        now=now,
        data={"superseded_by": str(new.pk)},
    )
    return True


def fan_out_locked(rollout: Rollout, now: datetime) -> None:
    """Fill the rollout with one INSERT .. SELECT; the caller holds its lock."""
    # Before the fan-out: the old rollouts' pending devices are let go first.
    if rollout.supersede_later:
        _supersede_left_for_later(rollout, now)
    candidates = _candidate_services(rollout)
    eligible = _eligible(candidates, rollout).count()
    boundaries = batch_boundaries(eligible, rollout.batch_percentages)
    inserted = _insert_rollout_devices(rollout, candidates, boundaries)
    rollout.total_devices = inserted
    rollout.fanned_out_at = now
    rollout.save(update_fields=["total_devices", "fanned_out_at"])
    if rollout.strategy != UpdateStrategy.MANUAL and rollout.status == RolloutStatus.PENDING:
        start_locked(rollout, now, actor="policy")


def _candidate_services(rollout: Rollout):
    """Every service of the image the rollout may touch: those it will not
    change are rows too, `skipped` with their reason."""
    return image_services(
        image=rollout.image,
        fleet_id=rollout.fleet_id,
        device_tags=rollout.device_tags,
        device_uuids=rollout.device_uuids,
    )


def _eligible(candidates, rollout: Rollout):
    return candidates.exclude(pinned=True).exclude(
        already_current(rollout.new_tag, rollout.new_digest)
    )


def batch_boundaries(devices: int, percentages: list[int]) -> list[int]:
    """Cumulative last row number of each batch: round up, and give every batch
    at least one device while devices remain."""
    boundaries: list[int] = []
    for percentage in percentages:
        boundary = math.ceil(devices * percentage / 100)
        if boundaries:
            boundary = max(boundary, min(devices, boundaries[-1] + 1))
        boundaries.append(min(boundary, devices))
    return boundaries


def _insert_rollout_devices(rollout: Rollout, candidates, boundaries: list[int]) -> int:
    services = DeviceService._meta.db_table
    devices = Device._meta.db_table
    rows = RolloutDevice._meta.db_table
    candidate_sql, candidate_params = (
        candidates.values("id").query.get_compiler(connection=connection).as_sql()
    )
    if rollout.new_digest:
        current = "s.target_digest = %s OR s.reported_digest = %s"
        current_params = [rollout.new_digest, rollout.new_digest]
    else:
        current, current_params = "s.target_tag = %s", [rollout.new_tag]
    # Why a row is skipped (null: it is not); the same rules as _eligible.
    skip = f"CASE WHEN s.pinned THEN 'pinned' WHEN {current} THEN 'already_current' END"
    skip_params = current_params
    batch_case = " ".join("WHEN x.rn <= %s THEN %s" for _ in boundaries)
    batch_params = [value for number, bound in enumerate(boundaries, 1) for value in (bound, number)]
    # Row numbers follow the devices' random uuids: the canaries of batch 1
    # are a random sample of the fleet, yet the same on every run. The count
    # behind the boundaries ran as its own statement: a device that appeared
    # since gets a row number past the last boundary and joins the last batch.
    sql = f"""
        INSERT INTO {rows} (rollout_id, device_id, service, batch, status, failure_reason,
                            skip_reason, old_tag, old_digest, new_tag, new_digest, step)
        SELECT %s, x.device_id, x.name,
               CASE WHEN x.skip IS NOT NULL THEN NULL {batch_case} ELSE %s END,
               CASE WHEN x.skip IS NOT NULL THEN 'skipped' ELSE 'pending' END,
               '', x.skip, x.target_tag, x.target_digest, %s, %s, 0
        FROM (
            SELECT s.device_id, s.name, s.target_tag, s.target_digest, {skip} AS skip,
                   ROW_NUMBER() OVER (
                       PARTITION BY ({skip}) IS NULL ORDER BY d.uuid, s.name
                   ) AS rn
            FROM {services} s JOIN {devices} d ON d.id = s.device_id
            WHERE s.id IN ({candidate_sql})
        ) x
    """
    params = [
        Rollout._meta.pk.get_db_prep_value(rollout.pk, connection),
        *batch_params,
        len(boundaries),
        rollout.new_tag,
        rollout.new_digest,
        *skip_params,
        *skip_params,
        *candidate_params,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
