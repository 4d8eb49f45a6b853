"""The device page's buttons: per service roll back, pin and unpin, and roll
back every service; the API's `POST /devices/{uuid}/rollback` and pins of
`PATCH /devices/{uuid}/`, through the same services.

Each button leads to a confirmation page (GET) whose form posts, with its
CSRF token, to the same URL. Who may press them is the API's rule: the
operator role in the device's fleet, or `devices.change_device`
(`DeviceAdmin.has_operate_permission`); a device outside the user's fleets
is a 404, as a missing one.
"""

from dataclasses import dataclass
from typing import Callable

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from devices import services
from devices.digests import enqueue_fill_target_digests
from devices.models import Device, DeviceService


def _roll_back(device: Device, service: str | None) -> str:
    changed = services.device_rollback(device_id=device.pk, service=service)
    # A version from the history may have no digest: a worker fills it in.
    enqueue_fill_target_digests(device.pk)
    return f"Rolled back {', '.join(changed)}."


def _pin(device: Device, service: str | None) -> str:
    services.device_change_services(device_id=device.pk, changes={service: services.ServiceChange(pinned=True)})
    return f"{service} is pinned to its target."


def _unpin(device: Device, service: str | None) -> str:
    services.device_change_services(device_id=device.pk, changes={service: services.ServiceChange(pinned=False)})
    return f"{service} is no longer pinned; its target stays."


@dataclass(frozen=True)
class DeviceAction:
    name: str
    label: str
    run: Callable[[Device, str | None], str]
    warning: str
    # Whether the action names one service (pins) or may name none (rollback:
    # every service).
    needs_service: bool = True

    def offered_for(self, service: DeviceService) -> bool:
        if self.name == "pin":
            return not service.pinned
        if self.name == "unpin":
            return service.pinned
        return True


ACTIONS: dict[str, DeviceAction] = {
    action.name: action
    for action in [
        DeviceAction(
            "rollback",
            "Roll back",
            _roll_back,
            "The service goes back to the newest version in its history that differs from "
            "its target (every service, when none is named); the device's target version grows.",
            needs_service=False,
        ),
        DeviceAction(
            "pin",
            "Pin",
            _pin,
            "No rollout changes a pinned service: rollouts list it as skipped (pinned) "
            "until it is unpinned. Its target stays as it is.",
        ),
        DeviceAction(
            "unpin", "Unpin", _unpin, "Rollouts may change the service again. Its target stays as it is."
        ),
    ]
}


def service_buttons(services_rows: list[DeviceService]) -> dict[str, list[DeviceAction]]:
    """Per service name, the actions its row offers."""
    return {
        row.name: [action for action in ACTIONS.values() if action.offered_for(row)]
        for row in services_rows
    }


def device_action_view(model_admin, request, object_id, name):
    """GET: the confirmation page; POST: run the action, back to the device."""
    action = ACTIONS.get(name)
    if action is None:
        raise Http404("No such action.")
    device = model_admin.get_object(request, unquote(object_id))
    if device is None:
        raise Http404("No such device.")
    if not model_admin.has_operate_permission(request, device):
        raise PermissionDenied
    service = request.POST.get("service") if request.method == "POST" else request.GET.get("service")
    service = service or None
    if action.needs_service and service is None:
        raise Http404("Name a service.")
    page = reverse("admin:devices_device_change", args=[device.pk])
    if request.method == "GET":
        context = {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.opts,
            "title": f"{action.label} {service or 'every service'} of {device}?",
            "device": device,
            "service": service,
            "action": action,
            "page_url": page,
        }
        return render(request, "console/confirm_device_action.html", context)
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    try:
        done = action.run(device, service)
    except (services.UnknownService, services.NoPreviousVersion) as exc:
        messages.warning(request, str(exc))
    else:
        messages.success(request, f"{device}: {done}")
    return HttpResponseRedirect(page)
