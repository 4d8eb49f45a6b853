"""The fleet, image and device pages of the console."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import path
from django.utils import timezone

from devices import access as fleet_access
from devices.models import Device, DeviceService
from devices.selectors import online_since
from rollouts import access
from rollouts.models import ACTIVE_STATUSES, Rollout, RolloutDevice

from . import device_actions, inventory, selectors

RECENT_ROLLOUTS = 10


class FleetPageMixin:
    """The fleet's overview above its edit form: online share, the version
    distribution of each image, devices behind and drifting, active rollouts."""

    change_form_template = "console/fleet_change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        fleet = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if fleet is not None:
            context.update(fleet_overview(fleet.pk))
        return super().change_view(request, object_id, form_url, context)


def fleet_overview(fleet_id: int) -> dict:
    rollouts = selectors.rollouts_for_console(
        Rollout.objects.filter(
            status__in=ACTIVE_STATUSES,
            pk__in=RolloutDevice.objects.filter(device__fleet_id=fleet_id).values("rollout_id"),
        )
    ).order_by("-created_at")
    return {
        "online": inventory.online_share(inventory.fleet_devices(fleet_id)),
        "images": inventory.image_inventory(fleets=[fleet_id]),
        "active_rollouts": [(rollout, selectors.rollout_progress(rollout)) for rollout in rollouts],
    }


class DevicePageMixin:
    """Each service's target beside what the device reports, its pin, its
    buttons (roll back, pin, unpin: console/device_actions.py) and the
    rollouts it took part in, above its edit form (whose history inline is
    the devices app's)."""

    change_form_template = "console/device_change_form.html"

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/act/<str:name>/",
                self.admin_site.admin_view(self.device_action_view),
                name="%s_%s_act" % info,
            ),
            *super().get_urls(),
        ]

    def device_action_view(self, request, object_id, name):
        return device_actions.device_action_view(self, request, object_id, name)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        device = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if device is not None:
            context.update(device_overview(device))
            context["may_operate"] = self.has_operate_permission(request, device)
        return super().change_view(request, object_id, form_url, context)


def device_overview(device: Device) -> dict:
    services = list(DeviceService.objects.filter(device=device).order_by("name"))
    buttons = device_actions.service_buttons(services)
    entries = (
        RolloutDevice.objects.filter(device=device)
        .select_related("rollout")
        .order_by("-rollout__created_at", "service")[:RECENT_ROLLOUTS]
    )
    return {
        "device_obj": device,
        "online_now": bool(device.last_seen_at and device.last_seen_at >= online_since()),
        "services": [(service, in_sync(service), buttons[service.name]) for service in services],
        "rollout_entries": list(entries),
    }


def in_sync(service: DeviceService) -> bool | None:
    """Runs what it should: same digest when the target names one, else same tag."""
    if not service.target_image or not service.reported_image:
        return None
    if service.target_digest:
        return service.target_digest == service.reported_digest
    return (service.target_image, service.target_tag) == (service.reported_image, service.reported_tag)


def active_rollouts_for(user) -> list | None:
    """The newest active rollouts the user may see, with their bars, or None
    for a user who may see none."""
    if not (user.has_perm("rollouts.view_rollout") or fleet_access.is_member(user)):
        return None
    active = access.visible_rollouts(Rollout.objects.filter(status__in=ACTIVE_STATUSES), user)
    rollouts = selectors.rollouts_for_console(active)
    rollouts = rollouts.order_by("-created_at")[:RECENT_ROLLOUTS]
    return [(rollout, selectors.rollout_progress(rollout)) for rollout in rollouts]


def images_view(request):
    context = {
        **admin.site.each_context(request),
        "title": "Images",
        "images": inventory.image_inventory(fleets=_inventory_fleets(request)),
    }
    return render(request, "console/images.html", context)


def image_view(request, image: str):
    entries = inventory.image_inventory(image=image, fleets=_inventory_fleets(request))
    entry = next((entry for entry in entries if entry.image == image), None)
    if entry is None:
        raise Http404("No device targets or runs this image.")
    rollouts = access.visible_rollouts(Rollout.objects.filter(image=image), request.user)
    rollouts = selectors.rollouts_for_console(rollouts).order_by("-created_at")[:RECENT_ROLLOUTS]
    context = {
        **admin.site.each_context(request),
        "title": entry.short,
        "entry": entry,
        "rollouts": [(rollout, selectors.rollout_progress(rollout)) for rollout in rollouts],
        "now": timezone.now(),
    }
    return render(request, "console/image.html", context)


def _inventory_fleets(request):
    """The inventory is about devices: every fleet with `view_device`, a
    member's fleets otherwise (None: no restriction)."""
    if fleet_access.has_model_perm(request.user, "devices.view_device"):
        return None
    if fleet_access.is_member(request.user):
        return fleet_access.member_fleet_ids(request.user)
    raise PermissionDenied
