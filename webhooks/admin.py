from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join

from devices.admin_access import ReadOnlyAdminMixin

from .models import WebhookDelivery


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: deliveries are an audit trail, written by the endpoint alone."""

    list_display = [
        "received_at",
        "registry",
        "outcome",
        "first_push",
        "rollout_link",
        "remote_addr",
    ]
    list_filter = ["registry", "outcome"]
    search_fields = ["delivery_key", "id"]
    date_hierarchy = "received_at"
    fields = [
        "id",
        "received_at",
        "registry",
        "delivery_key",
        "body_sha256",
        "remote_addr",
        "headers",
        "outcome",
        "rollout_link",
        "pushes",
        "response",
    ]
    readonly_fields = fields

    @admin.display(description="push")
    def first_push(self, delivery):
        if not delivery.pushes:
            return "-"
        push = delivery.pushes[0]
        more = f" (+{len(delivery.pushes) - 1})" if len(delivery.pushes) > 1 else ""
        return f"{push.get('image')}:{push.get('tag')}{more}"

    @admin.display(description="rollouts")
    def rollout_link(self, delivery):
        rollout_ids = [push["rollout_id"] for push in delivery.pushes if push.get("rollout_id")]
        if not rollout_ids:
            return "-"
        return format_html_join(", ", "{}", ((_rollout_link(rid),) for rid in rollout_ids))


def _rollout_link(rollout_id: str) -> str:
    try:
        url = reverse("admin:rollouts_rollout_change", args=[rollout_id])
    except NoReverseMatch:
        return rollout_id
    return format_html('<a href="{}">{}</a>', url, rollout_id)
