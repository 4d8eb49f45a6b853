from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.utils.html import format_html, format_html_join

from . import services
from .models import Device, DeviceService, DeviceTag, Fleet, ServiceHistory
from .selectors import devices_online, fleet_version_distribution, online_since
from .serializers import TAG_NAME

# Bar colours of the version distribution, in the order of the versions.
BAR_COLOURS = ["#417690", "#79aec8", "#e8a33d", "#ba2121", "#5b8a3c", "#8e6bb0", "#999999"]


@admin.register(Fleet)
class FleetAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "device_count", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["created_at", "versions"]

    @admin.display(description="versions running, per image")
    def versions(self, fleet):
        """One bar per image: the share of the fleet's services on each version."""
        bars = []
        for image, versions in fleet_version_distribution(fleet_id=fleet.pk).items():
            total = sum(count for _, count in versions)
            segments = format_html_join(
                "",
                '<span title="{0}: {1}" style="display:inline-block;height:14px;'
                'width:{2}%;background:{3}"></span>',
                (
                    # Formatted here: format_html escapes its arguments to text first.
                    (label, count, f"{100 * count / total:.2f}", BAR_COLOURS[min(i, len(BAR_COLOURS) - 1)])
                    for i, (label, count) in enumerate(versions)
                ),
            )
            legend = ", ".join(f"{label}: {count}" for label, count in versions)
            bars.append(
                format_html(
                    '<div style="margin-bottom:8px"><strong>{}</strong> ({} services)<div '
                    'class="version-bar" style="width:420px;border:1px solid #ccc;line-height:0">'
                    "{}</div><small>{}</small></div>",
                    image, total, segments, legend,
                )
            )
        return format_html_join("", "{}", ((bar,) for bar in bars)) or "-"

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
        names = DeviceTag.objects.values_list("name", flat=True).distinct().order_by("name")
        return [(name, name) for name in names[:100]]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        # A value that cannot be a tag (a NUL would make PostgreSQL raise)
        # matches no device.
        if not TAG_NAME.fullmatch(self.value()):
            return queryset.none()
        return queryset.filter(tag_set__name=self.value())


class DeviceServiceInline(admin.TabularInline):
    """Target beside reported state, one row per service."""

    model = DeviceService
    extra = 0
    can_delete = False
    fields = ["name", "target", "pinned", "reported", "in_sync", "status", "reported_at", "previous"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="target")
    def target(self, service):
        return service.target_reference or "-"

    @admin.display(description="reported")
    def reported(self, service):
        return service.reported_reference or "-"

    @admin.display(description="in sync", boolean=True)
    def in_sync(self, service):
        if not service.target_image or not service.reported_image:
            return None
        same_digest = service.target_digest and service.target_digest == service.reported_digest
        same_tag = (service.target_image, service.target_tag) == (
            service.reported_image,
            service.reported_tag,
        )
        return bool(same_digest or (not service.target_digest and same_tag))

    @admin.display(description="status / health")
    def status(self, service):
        return f"{service.reported_status or '-'} / {service.reported_health or '-'}"

    @admin.display(description="previous")
    def previous(self, service):
        return service.previous_image and f"{service.previous_image}:{service.previous_tag}"


class ServiceHistoryInline(admin.TabularInline):
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


class DeviceTagInline(admin.TabularInline):
    model = DeviceTag
    extra = 1


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["__str__", "uuid", "fleet", "online", "target_version", "last_seen_at"]
    list_filter = [OnlineFilter, "fleet", TagFilter]
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
    inlines = [DeviceTagInline, DeviceServiceInline, ServiceHistoryInline]
    # Adds the "Roll back every service" button (see response_change).
    change_form_template = "admin/devices/device/change_form.html"
    actions = ["roll_back"]

    @admin.action(description="Roll back every service to its previous version", permissions=["change"])
    def roll_back(self, request, queryset):
        for device in queryset.order_by("pk"):
            self._roll_back(request, device)

    def response_change(self, request, obj):
        if "_rollback" in request.POST:
            self._roll_back(request, obj)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def _roll_back(self, request, device) -> None:
        try:
            changed = services.device_rollback(device_id=device.pk)
        except services.NoPreviousVersion as exc:
            self.message_user(request, f"{device}: {exc}", messages.WARNING)
            return
        self.message_user(request, f"{device}: rolled back {', '.join(changed)}.", messages.SUCCESS)

    def has_add_permission(self, request):
        # A device needs an api key shown once: create it through the API or
        # let it self-register, both of which hand the key over.
        return False

    @admin.display(boolean=True)
    def online(self, device):
        return device.last_seen_at is not None and device.last_seen_at >= online_since()
