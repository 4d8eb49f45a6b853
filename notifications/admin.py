from django.contrib import admin

from .models import NotificationDelivery, NotificationHook


@admin.register(NotificationHook)
class NotificationHookAdmin(admin.ModelAdmin):
    list_display = ["url", "format", "enabled", "created_at"]
    list_filter = ["enabled", "format"]
    exclude = ["secret"]


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "hook", "event_type", "status", "status_code", "attempts", "created_at"]
    list_filter = ["status", "event_type"]
    readonly_fields = [f.name for f in NotificationDelivery._meta.fields]

    def has_add_permission(self, request):
        return False
