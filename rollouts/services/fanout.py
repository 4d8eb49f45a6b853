"""Creating rollouts for a push and filling them with devices (the fan-out)."""

import copy
import hashlib
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

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
from ..selectors import policy_for_push
from ..versions import Risk, VersionRules
from .events import event_record, events_for_skips
from .pushes import push_record
from .selection import Selection, Target, batch_boundaries, push_outcome
from .transitions import await_approval_locked, needs_approval, start_locked

# The name of the task in rollouts.tasks that runs `rollout_fan_out`.
FAN_OUT_TASK = "rollouts.fan_out_rollout"


@dataclass(frozen=True)
class PushOutcome:
    # "rollout_created" | "no_matching_policy" | "no_affected_devices" | "ignored"
    status: str
    rollout: Rollout | None
    # Why a push that matched a policy was `ignored` (its version rules).
    reason: str | None = None


def rollout_create_for_push(
    *,
    image: str,
    tag: str,
    digest: str | None,
    trigger: str = Trigger.WEBHOOK,
    policy: ImagePolicy | None = None,
    source: dict | None = None,
    allow_downgrade: bool | None = None,
    required_versions: list[str] | None = None,
    now: datetime | None = None,
) -> PushOutcome:
    """Create the `pending` rollout for a push; devices are added by the fan-out
    task after commit, so the time taken here does not grow with the fleet.

    A webhook (or poll) push that affects no device creates nothing; a manual
    trigger always creates its rollout (it completes at once when it has no
    devices). `allow_downgrade` and `required_versions` (manual trigger)
    override the policy's.
    """
    overrides = trigger_overrides(allow_downgrade=allow_downgrade, required_versions=required_versions)
    now = now or timezone.now()
    push_record(image=image, tag=tag, digest=digest, trigger=trigger, now=now)
    policy = policy or policy_for_push(image=image, tag=tag)
    if policy is None:
        return PushOutcome("no_matching_policy", None)
    if trigger != Trigger.MANUAL:
        rules = VersionRules.of(policy)
        target = Target.of(policy, image=image, tag=tag, digest=digest, rules=rules)
        digest_known = digest is not None or not settings.REGISTRY_RESOLVE_DIGESTS
        status, reason = push_outcome(target, digest_known=digest_known)
        if status != "rollout_created":
            return PushOutcome(status, None, reason)
    with transaction.atomic():
        _lock_image(image)
        rollout = _create_rollout_row(policy, image, tag, digest, trigger, now, overrides)
        if trigger != Trigger.MANUAL:
            event_record(
                rollout=rollout,
                event_type=EventType.WEBHOOK_RECEIVED,
                message=f"{'Push' if trigger == Trigger.WEBHOOK else 'Registry poll'} of {image}:{tag} received",
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


def trigger_overrides(*, allow_downgrade: bool | None, required_versions: list[str] | None) -> dict:
    """What a manual trigger (or its dry run) sets instead of the policy."""
    overrides = {"allow_downgrade": allow_downgrade, "required_versions": required_versions}
    return {name: value for name, value in overrides.items() if value is not None}


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


def _create_rollout_row(
    policy: ImagePolicy,
    image: str,
    tag: str,
    digest: str | None,
    trigger: str,
    now: datetime,
    overrides: dict,
) -> Rollout:
    return Rollout.objects.create(**rollout_fields(policy, image, tag, digest, trigger, now, overrides))


def rollout_fields(
    policy: ImagePolicy,
    image: str,
    tag: str,
    digest: str | None,
    trigger: str,
    now: datetime,
    overrides: dict,
) -> dict:
    """The new rollout's fields: the policy's settings copied (a rollout is
    never changed by a later edit of its policy), with the trigger's
    overrides. The dry run builds its unsaved rollout from the same."""
    settings = {name: copy.deepcopy(getattr(policy, name)) for name in SETTINGS_FIELDS}
    if policy.update_strategy == UpdateStrategy.AUTO:
        # `auto` is one batch that reaches everyone.
        settings["batch_percentages"] = [100]
    settings.update(overrides)
    return dict(
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
    """Fill the rollout with one INSERT .. SELECT; the caller holds its lock.
    Then it starts, or waits for approval when it is riskier than its
    policy lets start unapproved."""
    # Before the fan-out: the old rollouts' pending devices are let go first.
    if rollout.supersede_later:
        _supersede_left_for_later(rollout, now)
    selection = Selection(rollout_target(rollout))
    summary = selection.summary()
    boundaries = batch_boundaries(summary.eligible, rollout.batch_percentages)
    inserted = _insert_rollout_devices(rollout, selection, boundaries)
    if summary.skipped:
        events_for_skips(rollout=rollout, now=now)
    rollout.total_devices = inserted
    rollout.fanned_out_at = now
    # No device to update is no risk taken.
    rollout.risk = (summary.risk or Risk.LOW).label
    rollout.save(update_fields=["total_devices", "fanned_out_at", "risk"])
    if rollout.status != RolloutStatus.PENDING:
        return
    if needs_approval(rollout):
        await_approval_locked(rollout, now)
    elif rollout.strategy != UpdateStrategy.MANUAL:
        start_locked(rollout, now, actor="policy")


def rollout_target(rollout: Rollout) -> Target:
    """The push of a rollout as the selection sees it (rules as copied)."""
    return Target.of(
        rollout,
        image=rollout.image,
        tag=rollout.new_tag,
        digest=rollout.new_digest,
        rules=VersionRules.of(rollout),
    )


def _insert_rollout_devices(rollout: Rollout, selection: Selection, boundaries: list[int]) -> int:
    rows = RolloutDevice._meta.db_table
    batched_sql, batched_params = selection.batched_sql(boundaries)
    # A device on an upgrade path is sent its first stepping stone first,
    # pinned to the digest resolved for it (rollout.via_digests).
    stones = [(tag, digest) for tag, digest in rollout.via_digests.items() if digest]
    stone_digest = "CASE x.first_stone " + " ".join("WHEN %s THEN %s" for _ in stones) + " END" if stones else "NULL"
    stone_params = [value for pair in stones for value in pair]
    json_cast = "::jsonb" if connection.vendor == "postgresql" else ""
    sql = f"""
        INSERT INTO {rows} (rollout_id, device_id, service, batch, status, failure_reason,
                            skip_reason, old_tag, old_digest, new_tag, new_digest, step,
                            via, hop)
        SELECT %s, x.device_id, x.name, x.batch,
               CASE WHEN x.skip IS NOT NULL THEN 'skipped' ELSE 'pending' END,
               '', x.skip, x.target_tag, x.target_digest,
               CASE WHEN x.skip IS NULL AND x.first_stone IS NOT NULL THEN x.first_stone ELSE %s END,
               CASE WHEN x.skip IS NULL AND x.first_stone IS NOT NULL THEN {stone_digest} ELSE %s END,
               0, CASE WHEN x.skip IS NULL THEN x.via ELSE '[]' END{json_cast}, 0
        FROM ({batched_sql}) x
    """
    params = [
        Rollout._meta.pk.get_db_prep_value(rollout.pk, connection),
        rollout.new_tag,
        *stone_params,
        rollout.new_digest,
        *batched_params,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
