"""Reads of devices that are more than a `.get()`."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from .keys import hash_key
from .models import Device, DeviceService, Fleet


@dataclass(frozen=True)
class AuthenticatedDevice:
    """The columns the agent endpoints need, fetched in the single auth query."""

    id: int
    uuid: object
    target_version: int
    last_seen_at: datetime | None


def device_for_api_key(api_key: str) -> AuthenticatedDevice | None:
    # The hot path: one indexed lookup by the unique key hash serves both
    # authentication and the ETag decision.
    row = (
        Device.objects.filter(api_key_hash=hash_key(api_key))
        .values_list("id", "uuid", "target_version", "last_seen_at")
        .first()
    )
    return AuthenticatedDevice(*row) if row else None


def fleet_for_provisioning_key(key: str) -> Fleet | None:
    return Fleet.objects.filter(provisioning_key_hash=hash_key(key)).first()


def device_target_services(*, device_id: int) -> dict[str, dict]:
    rows = DeviceService.objects.filter(device_id=device_id, target_image__isnull=False).values_list(
        "name", "target_image", "target_tag", "target_digest", "target_rollout_id"
    )
    return {
        name: {
            "image": image,
            "tag": tag,
            "digest": digest,
            "rollout_id": str(rollout_id) if rollout_id else None,
        }
        for name, image, tag, digest, rollout_id in rows
    }


def online_since(now: datetime | None = None) -> datetime:
    """Devices seen after this moment count as online."""
    now = now or timezone.now()
    window = settings.DEVICE_POLL_INTERVAL_SECONDS * settings.DEVICE_ONLINE_POLL_INTERVALS
    return now - timedelta(seconds=window)


def devices_online(queryset: QuerySet, online: bool, now: datetime | None = None) -> QuerySet:
    is_online = Q(last_seen_at__gte=online_since(now))
    return queryset.filter(is_online) if online else queryset.exclude(is_online)


# "Behind" means: not on the version of the newest completed rollout of the
# image. Only the rollouts app knows that; it registers its selector here when
# Django starts (rollouts/apps.py), so that devices never import rollouts.
_behind_selector = None


def register_behind_selector(selector) -> None:
    global _behind_selector
    _behind_selector = selector


def devices_behind(queryset: QuerySet, image: str) -> QuerySet:
    if _behind_selector is None:
        return queryset.none()
    return _behind_selector(queryset, image)


def devices_with_image(queryset: QuerySet, image: str) -> QuerySet:
    """Devices with a service that targets or runs `image`."""
    services = DeviceService.objects.filter(
        Q(target_image=image) | Q(reported_image=image), device_id=OuterRef("pk")
    )
    return queryset.filter(Exists(services))


def fleet_version_distribution(*, fleet_id: int) -> dict[str, list[tuple[str, int]]]:
    """Per image, (version, services) for the fleet, most used first: what
    runs (the report), or what is targeted while nothing was reported."""
    rows = (
        DeviceService.objects.filter(device__fleet_id=fleet_id)
        .annotate(
            image=Coalesce("reported_image", "target_image"),
            tag=Coalesce("reported_tag", "target_tag"),
        )
        .filter(image__isnull=False)
        .values("image", "tag")
        .annotate(services=Count("id"))
        .order_by("image", "-services", "tag")
    )
    distribution: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        distribution.setdefault(row["image"], []).append((row["tag"] or "?", row["services"]))
    return distribution
