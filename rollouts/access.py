"""Per-fleet access to rollouts, their devices and events (CONTRACT section 10).

Builds on `devices.access` (read its docstring first). A rollout belongs to
every fleet it touches: the fleets of its devices, and its policy's fleet
(so a rollout whose fan-out has not run yet is seen by that fleet's members).

- Lists and lookups of rollouts: `visible_rollouts(queryset, user)`; of
  anything hanging off a rollout (events, streams): filter by
  `rollout__in=visible_rollouts(Rollout.objects.all(), user)` or look the
  rollout up in `visible_rollouts` first (404 outside).
- Device rows and device events of a visible rollout: `visible_rollout_devices`
  and `visible_events`, so a member of one fleet does not read the devices of
  the other fleets a rollout spans.
- Actions (start, pause, resume, cancel, rollback-all, retry, approve, reject):
  `require_steer(user, rollout)` before changing anything: 403 unless the user
  has `rollouts.change_rollout` or is operator (or admin) of every fleet the
  rollout touches.
- Image policies: `devices.access.scope(..., perm="rollouts.view_imagepolicy")`
  and `require_policy_write`; a policy without a fleet needs model permissions.

All of these are subqueries: a scoped list costs the same number of queries
whatever the number of the user's memberships.
"""

from collections.abc import Iterable

from django.db.models import Exists, OuterRef, Q, QuerySet

from devices import access
from devices.models import Device, Role

from .models import Rollout, RolloutDevice

VIEW_ROLLOUT = "rollouts.view_rollout"
CHANGE_ROLLOUT = "rollouts.change_rollout"


def _touches(fleet_ids: QuerySet) -> Q:
    """Rollouts that touch one of `fleet_ids` (a subquery)."""
    devices_there = RolloutDevice.objects.filter(
        rollout=OuterRef("pk"), device__fleet_id__in=fleet_ids
    )
    return Q(fleet_id__in=fleet_ids) | Q(Exists(devices_there))


def visible_rollouts(queryset: QuerySet, user) -> QuerySet:
    """Every rollout with `view_rollout`; otherwise those that touch a fleet
    where the user is a member."""
    if access.has_model_perm(user, VIEW_ROLLOUT):
        return queryset
    return queryset.filter(_touches(access.member_fleet_ids(user)))


def visible_rollout_devices(queryset: QuerySet, user) -> QuerySet:
    """Rows of `RolloutDevice` whose device is in one of the user's fleets."""
    return access.scope(queryset, user, perm=VIEW_ROLLOUT, fleet_field="device__fleet")


def visible_events(queryset: QuerySet, user) -> QuerySet:
    """Events of visible rollouts: rollout-level events, and device events of
    devices in the user's fleets (events name devices by uuid, not by key)."""
    if access.has_model_perm(user, VIEW_ROLLOUT):
        return queryset
    own_device = Device.objects.filter(
        uuid=OuterRef("device_uuid"), fleet_id__in=access.member_fleet_ids(user)
    )
    return queryset.filter(Q(device_uuid__isnull=True) | Q(Exists(own_device)))


def rollout_fleet_ids(rollout: Rollout) -> set[int | None]:
    """Every fleet the rollout touches (one query)."""
    fleets = set(
        RolloutDevice.objects.filter(rollout=rollout)
        .values_list("device__fleet_id", flat=True)
        .distinct()
    )
    if rollout.fleet_id:
        fleets.add(rollout.fleet_id)
    return fleets


def may_steer(user, rollout: Rollout) -> bool:
    return access.may(user, rollout_fleet_ids(rollout), Role.OPERATOR, perm=CHANGE_ROLLOUT)


def require_steer(user, rollout: Rollout) -> None:
    """403 unless the user may act on the rollout (every fleet it touches)."""
    access.require(user, rollout_fleet_ids(rollout), Role.OPERATOR, perm=CHANGE_ROLLOUT)


def steerable_rollouts(queryset: QuerySet, user) -> QuerySet:
    """The rollouts of `queryset` the user may act on (admin actions)."""
    if access.has_model_perm(user, CHANGE_ROLLOUT):
        return queryset
    operated = access.member_fleet_ids(user, Role.OPERATOR)
    elsewhere = RolloutDevice.objects.filter(rollout=OuterRef("pk")).exclude(
        device__fleet_id__in=operated
    )
    return queryset.filter(_touches(operated)).exclude(
        Q(fleet__isnull=False) & ~Q(fleet_id__in=operated)
    ).exclude(Exists(elsewhere))


def require_policy_write(user, fleet_ids: Iterable[int | None], perm: str) -> None:
    """Writing an image policy: operator of its fleet (of both fleets when a
    change moves it), or `perm` for a policy without a fleet."""
    access.require(user, fleet_ids, Role.OPERATOR, perm=perm)
