"""Reads of policies and rollouts that are more than a `.get()`."""

from fnmatch import fnmatchcase

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from devices.models import DeviceService, DeviceTag

from .models import ACTIVE_STATUSES, DeviceStatus, ImagePolicy, Rollout

WILDCARDS = "*?["


def pattern_specificity(pattern: str) -> tuple[int, int]:
    """Sort key, most specific first: patterns without wildcards before those
    with, then the longer literal part (the contract's precedence rule)."""
    literal = sum(1 for char in pattern if char not in WILDCARDS)
    has_wildcards = any(char in pattern for char in WILDCARDS)
    return (int(has_wildcards), -literal)


def pattern_repository(pattern: str) -> str:
    """The repository part of a normalized `registry/namespace/name:tag`
    pattern (a registry host may have a port, so the last colon after the
    last slash)."""
    colon, slash = pattern.rfind(":"), pattern.rfind("/")
    return pattern[:colon] if colon > slash else pattern


def pattern_is_pollable(pattern: str) -> bool:
    """Only one named repository can have its tag list polled."""
    return not any(char in pattern_repository(pattern) for char in WILDCARDS)


def policy_for_push(*, image: str, tag: str) -> ImagePolicy | None:
    """The enabled policy whose pattern matches `image:tag` best, or None.

    Policies are few (tens), so matching them in Python with the exact glob
    semantics is simpler and faster than translating globs to SQL.
    """
    subject = f"{image}:{tag}"
    matching = [
        policy
        for policy in ImagePolicy.objects.filter(enabled=True).select_related("fleet")
        if fnmatchcase(subject, policy.image_pattern)
    ]
    matching.sort(key=lambda policy: (pattern_specificity(policy.image_pattern), policy.pk))
    return matching[0] if matching else None


def already_current(tag: str, digest: str | None) -> Q:
    """Services whose *target* already has the version (CONTRACT section 6;
    what a device reports is not what it was told to run): by digest when it
    is known (a target naming the tag without a digest is sent the digest),
    by tag otherwise."""
    if digest:
        return Q(target_digest=digest)
    return Q(target_tag=tag)


def image_services(
    *,
    image: str,
    fleet_id: int | None = None,
    device_tags: list[str] = (),
    device_uuids: list[str] = (),
) -> QuerySet:
    """Every device service whose target is `image`, narrowed by a policy's
    filters: the rows of a rollout, skipped ones included."""
    services = DeviceService.objects.filter(target_image=image)
    if fleet_id:
        services = services.filter(device__fleet_id=fleet_id)
    for device_tag in device_tags:
        services = services.filter(
            Exists(DeviceTag.objects.filter(device_id=OuterRef("device_id"), name=device_tag))
        )
    if device_uuids:
        services = services.filter(device__uuid__in=device_uuids)
    return services


def failure_rate(healthy: int, failures: int) -> float:
    """failed / (healthy + failed); devices that failed and were then rolled
    back still count as failures."""
    judged = healthy + failures
    return round(failures / judged, 4) if judged else 0.0


def with_counts(rollouts: QuerySet) -> QuerySet:
    """Annotate `count_<status>` for every device status, `count_failures`
    (devices with a failure verdict, rolled back or not) and `count_total`
    (every row, so it stays true when a device is deleted), in the same query."""
    return rollouts.annotate(
        count_total=Count("devices"),
        **{
            f"count_{status}": Count("devices", filter=Q(devices__status=status))
            for status in DeviceStatus.values
        },
        count_failures=Count("devices", filter=~Q(devices__failure_reason="")),
    )


def active_rollouts() -> QuerySet:
    """Pending, running and paused rollouts with live progress counts."""
    return with_counts(Rollout.objects.filter(status__in=ACTIVE_STATUSES)).order_by("created_at")
