from django.contrib import admin, messages
from django.db.models import Count

from . import services
from .digests import enqueue_fill_target_digests
from .admin_access import (
    FleetListFilter,
    FleetScopedAdminMixin,
    FleetScopedInlineMixin,
    ReadOnlyAdminMixin,
)
from .models import Device, DeviceTag, Fleet, FleetAuditEvent, FleetMembership, Role, ServiceHistory
from .selectors import devices_online, online_since
from .serializers import TAG_NAME


@admin.register(Fleet)
class FleetAdmin(FleetScopedAdminMixin, admin.ModelAdmin):
    list_display = ["slug", "name", "device_count", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["created_at"]
    fleet_field = "pk"
    # Deleting a fleet needs the model permission, as in the API.
    member_roles = {"view": Role.VIEWER, "change": Role.ADMIN}

    def has_add_permission(self, request):
        # A fleet needs a provisioning key shown once: create it through the
        # API (POST /api/v1/fleets/), which hands the key over.
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(device_count=Count("devices"))

    @admin.display(ordering="device_count")
    def device_count(self, fleet):
        return fleet.device_count


class OnlineFilter(admin.SimpleListFilter):
    title = "connectivity"
    parameter_name = "online"

    def lookups(self, request, model_admin):
        return [("yes", "Online"), ("no", "Offline")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return devices_online(queryset, self.value() == "yes")
        return queryset


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        # The tags of the devices the user may see, not another fleet's.
        tags = DeviceTag.objects.filter(device__in=model_admin.get_queryset(request))
        names = tags.values_list("name", flat=True).distinct().order_by("name")
        return [(name, name) for name in names[:100]]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        # A value that cannot be a tag (a NUL would make PostgreSQL raise)
        # matches no device.
        if not TAG_NAME.fullmatch(self.value()):
            return queryset.none()
        return queryset.filter(tag_set__name=self.value())


class ServiceHistoryInline(FleetScopedInlineMixin, admin.TabularInline):
    """Every target the services had, newest first (DEVICE_HISTORY_KEEP per service)."""

    model = ServiceHistory
    extra = 0
    can_delete = False
    verbose_name_plural = "history"
    fields = ["service", "version", "source", "rollout_id", "deployed_at", "replaced_at", "outcome"]
    readonly_fields = fields
    ordering = ["service", "-deployed_at", "-id"]

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="version")
    def version(self, entry):
        return f"{entry.image}:{entry.tag}" + (f"@{entry.digest[:19]}" if entry.digest else "")


class DeviceTagInline(FleetScopedInlineMixin, admin.TabularInline):
    model = DeviceTag
    extra = 1


@admin.register(Device)
class DeviceAdmin(FleetScopedAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "uuid", "fleet", "online", "target_version", "last_seen_at"]
    list_filter = [OnlineFilter, ("fleet", FleetListFilter), TagFilter]
    search_fields = ["name", "uuid", "tag_set__name"]
    list_select_related = ["fleet"]
    readonly_fields = [
        "uuid",
        "target_version",
        "reported_target_version",
        "last_seen_at",
        "last_report_at",
        "created_at",
    ]
    inlines = [DeviceTagInline, ServiceHistoryInline]
    actions = ["roll_back"]
    # Renaming, retagging, moving and deleting a device are a fleet admin's;
    # rolling back (deploying, pinning) an operator's, as in the API.
    member_roles = {
        "view": Role.VIEWER,
        "change": Role.ADMIN,
        "delete": Role.ADMIN,
        "operate": Role.OPERATOR,
    }
    extra_model_perms = {"operate": "devices.change_device"}

    def has_operate_permission(self, request, obj=None):
        return self.has_fleet_permission(request, "operate", obj)

    @admin.action(description="Roll back every service to its previous version", permissions=["operate"])
    def roll_back(self, request, queryset):
        for device in queryset.order_by("pk"):
            self._roll_back(request, device)

    def _roll_back(self, request, device) -> None:
        try:
            changed = services.device_rollback(device_id=device.pk)
        except services.NoPreviousVersion as exc:
            self.message_user(request, f"{device}: {exc}", messages.WARNING)
            return
        enqueue_fill_target_digests(device.pk)
        self.message_user(request, f"{device}: rolled back {', '.join(changed)}.", messages.SUCCESS)

    def get_deleted_objects(self, objs, request):
        # A device's services, tags, history and rollout rows go with it, as
        # with DELETE /devices/{uuid}/: the right to delete the device (a
        # fleet admin's, or delete_device) is enough, without the model
        # permissions of those rows.
        deleted, counts, _, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def has_add_permission(self, request):
        # A device needs an api key shown once: create it through the API or
        # let it self-register, both of which hand the key over.
        return False

    @admin.display(boolean=True)
    def online(self, device):
        return device.last_seen_at is not None and device.last_seen_at >= online_since()


@admin.register(FleetMembership)
class FleetMembershipAdmin(ReadOnlyAdminMixin, FleetScopedAdminMixin, admin.ModelAdmin):
    """Who may do what in which fleet, shown to the fleet's members as the
    members API shows it. Read-only: memberships change through
    /api/v1/fleets/{slug}/members/, which records each change in the audit
    trail."""

    list_display = ["fleet", "user", "role", "created_at"]
    list_filter = ["role", ("fleet", FleetListFilter)]
    search_fields = ["user__username", "fleet__slug"]
    list_select_related = ["fleet", "user"]


@admin.register(FleetAuditEvent)
class FleetAuditEventAdmin(ReadOnlyAdminMixin, FleetScopedAdminMixin, admin.ModelAdmin):
    """Membership changes and key rotations, for the fleet's admins (as
    GET /fleets/{slug}/audit/)."""

    list_display = ["timestamp", "fleet_slug", "action", "actor", "subject"]
    list_filter = ["action"]
    search_fields = ["fleet_slug", "actor", "subject"]
    member_roles = {"view": Role.ADMIN}
