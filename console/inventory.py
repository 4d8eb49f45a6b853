"""The inventory as the console lays it out: per image, a stacked bar of
its versions (by tag), the devices behind its latest completed rollout and
the drifting ones. The numbers are rollouts/inventory.py's, the same as
`GET /images/`; this module only groups and colours them.

A fixed number of grouped queries, whatever the number of devices.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, Q

from devices.models import Device, Fleet
from devices.selectors import online_since
from rollouts.inventory import ImageRows, image_versions

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
    """One entry per image some device targets or runs, most devices first;
    over the devices of `fleets` (ids, or a query of ids) when given."""
    visible = _fleet_ids(fleets)
    rows = ImageRows(image=image, visible=visible, now=now).rows()
    versions = image_versions([row["image"] for row in rows], visible=visible) if rows else {}
    entries = []
    for row in rows:
        latest = row["latest"]["tag"] if row["latest"] else None
        entry = ImageInventory(row["image"], row["devices"], latest, row["behind"], row["drifting"])
        for version in versions[row["image"]]:
            # One segment per tag: the digests a tag had share it.
            share = _share(entry, version["tag"])
            share.targeted += version["targeted"]
            share.running += version["running"]
        _finish(entry)
        entries.append(entry)
    return entries


def _fleet_ids(fleets):
    if fleets is None or hasattr(fleets, "query"):
        return fleets
    return Fleet.objects.filter(pk__in=list(fleets)).values("pk")


def _share(entry: ImageInventory, tag: str | None) -> VersionShare:
    tag = tag or "(no tag)"
    for share in entry.versions:
        if share.tag == tag:
            return share
    share = VersionShare(tag)
    entry.versions.append(share)
    return share


def _finish(entry: ImageInventory) -> None:
    entry.versions.sort(key=lambda share: (-share.targeted, -share.running, share.tag))
    targeted = sum(share.targeted for share in entry.versions)
    for index, share in enumerate(entry.versions):
        share.percent = round(100 * share.targeted / targeted, 2) if targeted else 0
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
