"""Per-fleet access: the one place that answers "which fleets may this user
read / operate / administer" (CONTRACT section 10).

Two ways to be allowed something:
- a model permission (`devices.view_device`, `rollouts.change_rollout`, ...)
  grants it across every fleet, exactly as before memberships existed;
- a `FleetMembership` grants it within one fleet, by role:
  viewer < operator < admin (each may all the one before may).

How to scope an endpoint (every endpoint that shows or changes something that
belongs to a fleet must do all four):

1. Permission class: `permission_classes = [access.FleetScopedPermission]`
   (or keep the default `ModelPermissions` only for global-only endpoints).
   It lets through users with the model permission of the method, and members
   of any fleet; the three points below then narrow what a member gets.
   A user with neither gets 403, as before.
2. Lists and object lookups: build the queryset with
   `access.scope(queryset, user, perm="app.view_model", fleet_field="fleet")`
   (`fleet_field` is the lookup path to the fleet: `"device__fleet"`, `"pk"`
   for fleets themselves). Look objects up in THAT queryset, so an object
   outside the user's fleets answers the same 404 as a missing id, never 403.
   A scoped list costs no extra query per membership: the membership test is
   a subquery (`member_fleet_ids`), not a Python list of ids.
   Rollouts, their devices and events: use `rollouts.access` (it builds on
   this module; `devices` never imports `rollouts`).
3. Writes: after the lookup, and before writing anything, call
   `access.require(user, [fleet_id, ...], Role.OPERATOR, perm="app.change_model")`.
   It raises DRF's `PermissionDenied` (403) unless the user has `perm` or the
   role in EVERY listed fleet. An empty list means "global only": just `perm`
   (image policies without a fleet, creating fleets).
   Which role: viewer reads; operator deploys, pins, rolls back devices, acts
   on rollouts, writes fleet-scoped image policies; admin creates, changes
   and deletes devices, rotates keys, manages members.
4. Input that names a fleet (a `fleet` slug in a body): resolve it through
   `readable_fleets(user)` so an invisible fleet is "does not exist" (400),
   like a missing one, then `require` the role on it.

The admin uses the same functions through `FleetScopedAdminMixin`
(`devices/admin_access.py`).
"""

from collections.abc import Iterable

from django.db.models import QuerySet
from rest_framework import exceptions

from fleet.permissions import ModelPermissions

from .models import Fleet, FleetMembership, Role

ROLE_ORDER = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]


def roles_at_least(role: str) -> list[str]:
    """The roles that include `role`: operator -> [operator, admin]."""
    return [str(each) for each in ROLE_ORDER[ROLE_ORDER.index(role) :]]


def has_model_perm(user, perm: str | Iterable[str]) -> bool:
    """Global access: the user has the model permission (any of several)."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    perms = [perm] if isinstance(perm, str) else list(perm)
    # Django caches a user's permissions on the user object: after the first
    # call this costs no query.
    return any(user.has_perm(each) for each in perms)


def member_fleet_ids(user, role: str = Role.VIEWER) -> QuerySet:
    """Ids of the fleets where the user has at least `role`, as a lazy
    queryset: used inside `filter(fleet__in=...)` it is a subquery, so the
    number of queries does not grow with the number of memberships."""
    if not (user and user.is_authenticated):
        return FleetMembership.objects.none().values("fleet_id")
    return FleetMembership.objects.filter(user=user, role__in=roles_at_least(role)).values(
        "fleet_id"
    )


def fleet_roles(user) -> dict[int, str]:
    """The user's role in each of their fleets: one query, remembered on the
    user object for the request (Django's permission cache does the same)."""
    if not (user and user.is_authenticated):
        return {}
    if not hasattr(user, "_fleet_roles"):
        user._fleet_roles = dict(
            FleetMembership.objects.filter(user=user).values_list("fleet_id", "role")
        )
    return user._fleet_roles


def is_member(user) -> bool:
    """Member of any fleet."""
    return bool(fleet_roles(user))


def holds(user, fleet_ids: Iterable[int | None], role: str, *, every: bool = True) -> bool:
    """Whether the user has at least `role` in every listed fleet (`every`),
    or in one of them. No fleet listed, or a None among them ("all fleets"):
    False. Memberships only; `may` adds model permissions."""
    wanted = set(fleet_ids)
    if not wanted or None in wanted:
        return False
    enough = set(roles_at_least(role))
    roles = fleet_roles(user)
    held = [roles.get(fleet_id) in enough for fleet_id in wanted]
    return all(held) if every else any(held)


def holds_somewhere(user, role: str) -> bool:
    """At least `role` in some fleet (whether the admin offers an action)."""
    return holds(user, fleet_roles(user), role, every=False)


def scope(
    queryset: QuerySet,
    user,
    *,
    perm: str | Iterable[str],
    fleet_field: str = "fleet",
    role: str = Role.VIEWER,
) -> QuerySet:
    """The rows of `queryset` the user may see: every row with the model
    permission `perm`, otherwise those whose fleet (`fleet_field`, a lookup
    path) is one where the user has at least `role`."""
    if has_model_perm(user, perm):
        return queryset
    return queryset.filter(**{f"{fleet_field}__in": member_fleet_ids(user, role)})


def readable_fleets(user, queryset: QuerySet | None = None) -> QuerySet:
    """Fleets the user may read (for resolving a fleet named in input)."""
    queryset = Fleet.objects.all() if queryset is None else queryset
    return scope(queryset, user, perm="devices.view_fleet", fleet_field="pk")


def may(user, fleet_ids: Iterable[int | None], role: str, *, perm: str | Iterable[str]) -> bool:
    """Whether the user has `perm`, or at least `role` in every listed fleet.
    No fleet listed (or a None among them: "all fleets") means `perm` only."""
    return has_model_perm(user, perm) or holds(user, fleet_ids, role)


def require_somewhere(user, role: str, *, perm: str | Iterable[str]) -> None:
    """403 unless the user has `perm` or at least `role` in some fleet. For a
    write whose fleet only its body names: checked before the body is read,
    so a caller who may do it nowhere gets 403 whatever the body (never a
    400 that teaches the body's shape); `require` follows once it is read."""
    if has_model_perm(user, perm) or holds_somewhere(user, role):
        return
    raise exceptions.PermissionDenied(f"This needs the {role} role in a fleet.")


def require(
    user, fleet_ids: Iterable[int | None], role: str, *, perm: str | Iterable[str]
) -> None:
    """403 (DRF PermissionDenied) unless `may(...)`. Call it before writing."""
    fleet_ids = list(fleet_ids)
    if may(user, fleet_ids, role, perm=perm):
        return
    if not fleet_ids or None in fleet_ids:
        detail = "This needs a model permission; a fleet membership does not grant it."
    else:
        detail = f"This needs the {role} role in every fleet concerned."
    raise exceptions.PermissionDenied(detail)


class FleetScopedPermission(ModelPermissions):
    """The model permission of the method (global access), or membership of
    some fleet; a member's queryset and role are then checked by the view."""

    def has_permission(self, request, view) -> bool:
        if super().has_permission(request, view):
            return True
        return is_member(request.user)
