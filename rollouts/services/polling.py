"""Registry polling (CONTRACT section 7): a policy with `poll_registry`
watches its repository's tag list instead of waiting for a webhook, and acts
on the newest tag its version rules allow exactly as on a push of it
(`trigger: "poll"`).

One beat task (`rollouts.poll_registries`, every POLL_BEAT_SECONDS) looks
for due policies; each is claimed with a lease (a compare-and-set UPDATE),
so two workers never poll the same policy at once, and a worker that dies
mid-poll only holds it for POLL_LEASE. The registry is asked outside any
transaction. Errors back off exponentially from the policy's interval, and a
429 waits at least as long as the registry's Retry-After.
"""

import logging
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from django.db.models import Q
from django.utils import timezone

from devices.registry import RegistryClient, RegistryError, RegistryRateLimited

from ..models import ImagePolicy, Rollout, Trigger
from ..selectors import pattern_repository
from ..versions import VersionRules, parse_tag
from .fanout import rollout_create_for_push
from .selection import Target

logger = logging.getLogger(__name__)

POLL_TASK = "rollouts.poll_registries"
POLL_BEAT_SECONDS = 60.0
# Longer than a tag list takes to read (REGISTRY_TIMEOUT_SECONDS per page).
POLL_LEASE = timedelta(minutes=5)
MAX_BACKOFF = timedelta(hours=6)
# Policies polled per beat; the rest are due on the next one.
POLLS_PER_PASS = 50


def registries_poll_due(*, now: datetime | None = None) -> int:
    """Poll every policy that is due (the beat task). Returns how many."""
    now = now or timezone.now()
    due = (
        ImagePolicy.objects.filter(_due(now))
        .order_by("next_poll_at", "pk")
        .values_list("pk", flat=True)[:POLLS_PER_PASS]
    )
    polled = 0
    for policy_id in list(due):
        try:
            polled += policy_poll(policy_id=policy_id, now=now) is not None
        except Exception:
            # One broken policy must not stop the others; its lease runs out.
            logger.exception("polling the registry for policy %s failed", policy_id)
    return polled


def _due(now: datetime) -> Q:
    return (
        Q(poll_registry=True, enabled=True)
        & (Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))
        & (Q(poll_lease_until__isnull=True) | Q(poll_lease_until__lt=now))
    )


def policy_poll(*, policy_id: int, now: datetime | None = None) -> str | None:
    """Poll one policy if it is due and no other worker holds it. Returns
    what the poll did ("rollout_created", "no_new_tag", an outcome of the
    push, or "error"), None when it was not ours to poll."""
    now = now or timezone.now()
    claimed = ImagePolicy.objects.filter(_due(now), pk=policy_id).update(
        poll_lease_until=now + POLL_LEASE
    )
    if claimed != 1:
        return None  # not due, or another worker got there first
    policy = ImagePolicy.objects.get(pk=policy_id)
    image = pattern_repository(policy.image_pattern)
    try:
        tags = RegistryClient.from_settings().list_tags(image)
    except RegistryError as exc:
        _record_error(policy, exc, now)
        return "error"
    tag = newest_allowed_tag(policy, image, tags)
    result = "no_new_tag"
    if tag is not None:
        outcome = rollout_create_for_push(
            image=image,
            tag=tag,
            digest=None,
            trigger=Trigger.POLL,
            policy=policy,
            source={"registry": "poll", "policy": policy.pk},
            now=now,
        )
        result = outcome.status
    ImagePolicy.objects.filter(pk=policy.pk).update(
        last_polled_at=now,
        last_poll_error="",
        poll_failures=0,
        next_poll_at=now + timedelta(minutes=policy.poll_interval_minutes),
        poll_lease_until=None,
    )
    return result


def newest_allowed_tag(policy: ImagePolicy, image: str, tags: list[str]) -> str | None:
    """The highest tag the policy's pattern and version rules allow, if a
    device of the policy targets an older version of its variant and no
    rollout of the image ever had it (a tag pushed or polled is acted on
    once)."""
    rules = VersionRules.of(policy)
    allowed = []
    for tag in tags:
        version = parse_tag(tag)
        if version is None or not fnmatchcase(f"{image}:{tag}", policy.image_pattern):
            continue
        if rules.push_reason(version) is None:
            allowed.append((version, tag))
    # What the policy's devices target (its fleet and tag filters), not
    # every device of the image.
    target = Target.of(policy, image=image, tag="", digest=None, rules=rules)
    targeted = target.candidates().order_by().values_list("target_tag", flat=True).distinct()
    running = [parse_tag(tag) for tag in targeted]
    candidates = []
    for variant in {version.variant for version, _ in allowed}:
        newest, tag = max((v.version, t) for v, t in allowed if v.variant == variant)
        if any(r is not None and r.variant == variant and r.version < newest for r in running):
            candidates.append((newest, tag))
    for _, tag in sorted(candidates, reverse=True):
        if not Rollout.objects.filter(image=image, new_tag=tag).exists():
            return tag
    return None


def _record_error(policy: ImagePolicy, exc: RegistryError, now: datetime) -> None:
    failures = policy.poll_failures + 1
    interval = timedelta(minutes=policy.poll_interval_minutes)
    wait = min(interval * 2 ** min(failures, 20), MAX_BACKOFF)
    if isinstance(exc, RegistryRateLimited):
        wait = max(wait, timedelta(seconds=exc.retry_after))
    logger.warning("registry poll of policy %s failed (%s); next try in %s", policy.pk, exc, wait)
    ImagePolicy.objects.filter(pk=policy.pk).update(
        last_polled_at=now,
        last_poll_error=str(exc)[:500],
        poll_failures=failures,
        next_poll_at=now + wait,
        poll_lease_until=None,
    )
