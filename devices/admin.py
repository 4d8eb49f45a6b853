from django.contrib import admin
from django.db.models import Count

from .models import Device, DeviceService, DeviceTag, Fleet
from .selectors import devices_online, online_since
from .serializers import TAG_NAME


@admin.register(Fleet)
class FleetAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "device_count", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["created_at"]

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
    fields = ["name", "target", "reported", "in_sync", "status", "reported_at", "previous"]
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
    inlines = [DeviceTagInline, DeviceServiceInline]

    def has_add_permission(self, request):
        # A device needs an api key shown once: create it through the API or
        # let it self-register, both of which hand the key over.
        return False

    @admin.display(boolean=True)
    def online(self, device):
        return device.last_seen_at is not None and device.last_seen_at >= online_since()
