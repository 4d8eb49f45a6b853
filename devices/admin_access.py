"""Per-fleet access in the admin: the API's rules (`devices.access`, read its
docstring first) on the admin's pages, the stock ones and the console's alike.

`FleetScopedAdminMixin` goes first in the bases of every ModelAdmin whose
rows belong to a fleet (the console subclasses those classes, so its pages
inherit it):
- lists and lookups: `get_queryset` is `scope_for(request, queryset, "view")`,
  so a member sees the rows of their fleets, and a row outside them is, like
  a missing id, a 404;
- permissions: `has_<p>_permission(request, obj)` is the model permission, or
  the role `member_roles[p]` in the object's fleet (without an object: in
  some fleet); a permission missing from `member_roles` needs the model
  permission;
- actions: offered when `has_<p>_permission(request)` (Django's rule); a POST
  of an action the user is not offered (another model's, a made-up name) is a
  403 before anything in the POST is looked at, and an action runs only when
  every selected row is one the user may act on (403 otherwise, nothing done);
- the role before the form: a change, add or "save as new" POST is refused
  (403) by Django's own `has_<p>_permission` check before the form is built,
  so a user without the role never sees the form's validation errors (the
  API's rule: the role before the body);
- forms: the fleet field offers only the fleets where the user may change
  rows, and a member must pick one.
Model permissions keep granting everything across every fleet.
"""

import functools
from collections.abc import Iterable

from django.contrib import admin
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from . import access
from .models import Fleet, Role


class FleetScopedAdminMixin:
    # Lookup path from the model to its fleet ("pk" for fleets themselves).
    fleet_field = "fleet"
    # The role a fleet member needs for each admin permission.
    member_roles: dict[str, str] = {"view": Role.VIEWER}
    # Model permissions behind the permissions of actions that are not one of
    # Django's four ("operate": "devices.change_device").
    extra_model_perms: dict[str, str] = {}

    # --- which rows --------------------------------------------------------

    def get_queryset(self, request):
        return self.scope_for(request, super().get_queryset(request), "view")

    def scope_for(self, request, queryset: QuerySet, permission: str) -> QuerySet:
        """The rows of `queryset` the user may `permission` (view, change, ...)."""
        if access.has_model_perm(request.user, self.model_perms(permission)):
            return queryset
        role = self.member_roles.get(permission)
        if role is None:
            return queryset.none()
        return self.member_rows(queryset, request.user, permission, role)

    def member_rows(self, queryset: QuerySet, user, permission: str, role: str) -> QuerySet:
        """A member's rows: those of the fleets where they have `role` (a
        subquery, whatever the number of memberships)."""
        return queryset.filter(**{f"{self.fleet_field}__in": access.member_fleet_ids(user, role)})

    def fleets_of(self, obj) -> Iterable[int | None]:
        """The fleets `obj` belongs to (follows `fleet_field`)."""
        *path, last = self.fleet_field.split("__")
        for name in path:
            obj = getattr(obj, name)
        return [obj.pk if last == "pk" else getattr(obj, f"{last}_id")]

    def model_perms(self, permission: str) -> list[str]:
        if permission in self.extra_model_perms:
            return [self.extra_model_perms[permission]]
        # Django's admin lets `change` see, too.
        names = [permission, "change"] if permission == "view" else [permission]
        opts = self.opts
        return [f"{opts.app_label}.{get_permission_codename(name, opts)}" for name in names]

    # --- may the user ------------------------------------------------------

    def has_fleet_permission(self, request, permission: str, obj=None) -> bool:
        """The model permission, or the member role for `permission` in the
        fleets of `obj` (to see a row, one of its fleets is enough; to act on
        it, every one); without `obj`, the role in some fleet."""
        if access.has_model_perm(request.user, self.model_perms(permission)):
            return True
        role = self.member_roles.get(permission)
        if role is None:
            return False
        if obj is None:
            return access.holds_somewhere(request.user, role)
        return access.holds(request.user, self.fleets_of(obj), role, every=permission != "view")

    def has_module_permission(self, request):
        return super().has_module_permission(request) or access.is_member(request.user)

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or self.has_fleet_permission(request, "view", obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) or self.has_fleet_permission(
            request, "change", obj
        )

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) or self.has_fleet_permission(
            request, "delete", obj
        )

    def has_add_permission(self, request):
        return super().has_add_permission(request) or self.has_fleet_permission(request, "add")

    # --- pages -------------------------------------------------------------

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django's admin answers a missing id with a redirect and a message;
        # get_object looks in get_queryset, so a row of another fleet would
        # take the same way. The API answers both 404 (CONTRACT section 10),
        # and so does the admin.
        raise Http404(f"No {opts.verbose_name} with this id.")

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST" and self._posts_an_action_not_offered(request):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)

    def _posts_an_action_not_offered(self, request) -> bool:
        # Any name outside the offered ones, known or not: Django would
        # otherwise answer a user offered no action with the list, and one
        # offered some with "No action selected" (a form error, not a refusal).
        posted = {name for name in request.POST.getlist("action") if name}
        return bool(posted - set(self.get_actions(request)))

    def get_actions(self, request):
        return {
            name: (self._guarded(func), name, description)
            for name, (func, name, description) in super().get_actions(request).items()
        }

    def _guarded(self, func):
        """The action, run only when the user may act on every selected row."""
        permissions = getattr(func, "allowed_permissions", ())

        @functools.wraps(func)
        def guarded(modeladmin, request, queryset):
            for permission in permissions:
                allowed = self.scope_for(request, self.model._default_manager.all(), permission)
                if queryset.exclude(pk__in=allowed.values("pk")).exists():
                    raise PermissionDenied
            return func(modeladmin, request, queryset)

        return guarded

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name != self.fleet_field or access.has_model_perm(
            request.user, self.model_perms("change") + self.model_perms("add")
        ):
            return super().formfield_for_foreignkey(db_field, request, **kwargs)
        role = self.member_roles.get("change") or self.member_roles.get("add")
        kwargs["queryset"] = Fleet.objects.filter(pk__in=access.member_fleet_ids(request.user, role))
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        # "All fleets" (no fleet) needs the model permission.
        field.required = True
        return field


class FleetScopedInlineMixin:
    """An inline follows its parent's page: shown to whoever may see the
    parent object, changed by whoever may change it."""

    def _parent_allows(self, request, obj, permission: str) -> bool:
        parent = self.admin_site.get_model_admin(self.parent_model)
        return obj is not None and getattr(parent, f"has_{permission}_permission")(request, obj)

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or self._parent_allows(request, obj, "view")

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) or self._parent_allows(request, obj, "change")

    def has_add_permission(self, request, obj=None):
        return super().has_add_permission(request, obj) or self._parent_allows(request, obj, "change")

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) or self._parent_allows(request, obj, "change")


class ReadOnlyAdminMixin:
    """Pages nobody writes through, model permissions included (audit trails,
    and rows only services write). Goes before FleetScopedAdminMixin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class FleetListFilter(admin.RelatedFieldListFilter):
    """Filter by fleet, offering only the fleets the user may read (a member
    never reads another fleet's name)."""

    def field_choices(self, field, request, model_admin):
        return [(fleet.pk, str(fleet)) for fleet in access.readable_fleets(request.user)]
