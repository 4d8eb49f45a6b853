"""What runs where: the version distribution of each image, the devices
behind the image's latest completed rollout, and the drifting ones.

A fixed number of grouped queries, whatever the number of devices.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Q
from django.utils import timezone

from devices.models import Device, DeviceService
from devices.selectors import online_since
from rollouts.models import Rollout, RolloutStatus

# Colours of the stacked bar; the rest of the versions share the last one.
BAR_COLOURS = 6


@dataclass
class VersionShare:
    tag: str
    targeted: int = 0
    running: int = 0
    percent: float = 0.0
    colour: str = ""
    latest: bool = False


@dataclass
class ImageInventory:
    image: str
    devices: int = 0
    latest_tag: str | None = None
    behind: int = 0
    drifting: int = 0
    versions: list[VersionShare] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.image.removeprefix("docker.io/").removeprefix("library/")


def image_inventory(
    *, fleets=None, image: str | None = None, now: datetime | None = None
) -> list[ImageInventory]:
    """One entry per image some device targets, most devices first; over the
    devices of `fleets` (ids, or a queryset of ids) when given."""
    now = now or timezone.now()
    services = DeviceService.objects.all()
    if fleets is not None:
        services = services.filter(device__fleet_id__in=fleets)
    if image:
        services = services.filter(Q(target_image=image) | Q(reported_image=image))
    inventories: dict[str, ImageInventory] = {}
    targeted = (
        services.filter(target_image__isnull=False)
        .values_list("target_image", "target_tag")
        .annotate(count=Count("id"))
    )
    for name, tag, count in targeted:
        entry = inventories.setdefault(name, ImageInventory(name))
        entry.devices += count
        _share(entry, tag).targeted += count
    running = (
        services.filter(reported_image__in=list(inventories))
        .values_list("reported_image", "reported_tag")
        .annotate(count=Count("id"))
    )
    running = list(running)
    for name, tag, count in running:
        _share(inventories[name], tag).running += count
    _mark_latest(inventories)
    for name, tag, count in running:
        entry = inventories[name]
        if entry.latest_tag and tag != entry.latest_tag:
            entry.behind += count
    for name, count in _drifting(services, now):
        if name in inventories:
            inventories[name].drifting = count
    ordered = sorted(inventories.values(), key=lambda entry: (-entry.devices, entry.image))
    for entry in ordered:
        _finish(entry)
    return ordered


def _share(entry: ImageInventory, tag: str | None) -> VersionShare:
    tag = tag or "(no tag)"
    for share in entry.versions:
        if share.tag == tag:
            return share
    share = VersionShare(tag)
    entry.versions.append(share)
    return share


def _mark_latest(inventories: dict[str, ImageInventory]) -> None:
    """The tag of each image's newest completed rollout (one query)."""
    completed = (
        Rollout.objects.filter(status=RolloutStatus.COMPLETED, image__in=list(inventories))
        .order_by("image", "-finished_at")
        .values_list("image", "new_tag")
    )
    for name, tag in completed:
        if inventories[name].latest_tag is None:
            inventories[name].latest_tag = tag


def _drifting(services, now: datetime):
    """Services whose report differs from a target set more than three poll
    intervals ago (an agent that polls has had time to apply it)."""
    cutoff = now - timedelta(seconds=3 * settings.DEVICE_POLL_INTERVAL_SECONDS)
    differs = (
        Q(reported_image__isnull=True)
        | ~Q(reported_image=F("target_image"))
        | ~Q(reported_tag=F("target_tag"))
    )
    settled = Q(target_changed_at__isnull=True) | Q(target_changed_at__lt=cutoff)
    return (
        services.filter(target_image__isnull=False)
        .filter(settled & differs)
        .values_list("target_image")
        .annotate(count=Count("id"))
    )


def _finish(entry: ImageInventory) -> None:
    entry.versions.sort(key=lambda share: (-share.targeted, share.tag))
    for index, share in enumerate(entry.versions):
        share.percent = round(100 * share.targeted / entry.devices, 2) if entry.devices else 0
        share.colour = f"c-v{index}" if index < BAR_COLOURS else "c-vother"
        share.latest = share.tag == entry.latest_tag


def online_share(devices) -> dict:
    """Devices and how many of them polled lately (one query)."""
    counts = devices.aggregate(
        total=Count("id"), online=Count("id", filter=Q(last_seen_at__gte=online_since()))
    )
    counts["percent"] = round(100 * counts["online"] / counts["total"]) if counts["total"] else 0
    return counts


def fleet_devices(fleet_id: int):
    return Device.objects.filter(fleet_id=fleet_id)
