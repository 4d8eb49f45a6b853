"""The dry run (`POST /rollouts/preview`): what a manual trigger would do now.

It builds the very rollout the trigger would create (`rollout_fields`,
unsaved) and asks the fan-out's own selection (`selection.Selection`) for
its devices, so the preview cannot disagree with the rollout: same version
rules, same skip reasons, same batch boundaries and order. It writes
nothing: no rollout, event, target or delivery.
"""

import math
from datetime import datetime, timedelta
from statistics import median

from django.conf import settings
from django.utils import timezone

from devices.registry import RegistryError, resolve_digest_cached

from ..models import DeviceStatus, ImagePolicy, Rollout, RolloutDevice, Trigger
from ..windows import next_window_opening
from .fanout import rollout_fields, rollout_target, trigger_overrides
from .selection import Selection, batch_boundaries
from .transitions import needs_approval

SAMPLE_DEVICES = 10
# Verdict times observed on the most recent rollouts of the image (else of
# any image) estimate how long a batch takes.
RECENT_ROLLOUTS = 20
RECENT_VERDICTS = 500


def rollout_preview(
    *,
    policy: ImagePolicy,
    image: str,
    tag: str,
    digest: str | None,
    allow_downgrade: bool | None = None,
    required_versions: list[str] | None = None,
    now: datetime | None = None,
) -> dict:
    now = now or timezone.now()
    overrides = trigger_overrides(allow_downgrade=allow_downgrade, required_versions=required_versions)
    rollout = Rollout(
        **rollout_fields(policy, image, tag, _digest(image, tag, digest), Trigger.MANUAL, now, overrides)
    )
    selection = Selection(rollout_target(rollout))
    summary = selection.summary()
    boundaries = batch_boundaries(summary.eligible, rollout.batch_percentages)
    samples = selection.samples(boundaries, SAMPLE_DEVICES) if summary.eligible else {}
    rollout.risk = (summary.risk.label if summary.risk else "low")
    batches = []
    previous = 0
    for number, boundary in enumerate(boundaries, 1):
        if boundary > previous:
            batches.append(
                {"batch": number, "devices": boundary - previous, "sample_devices": samples.get(number, [])}
            )
        previous = boundary
    longest_path = max((len(via) for _, via in summary.upgrade_paths), default=0)
    return {
        "policy": policy.pk,
        "image": image,
        "tag": tag,
        "digest": rollout.new_digest,
        "strategy": rollout.strategy,
        "risk": rollout.risk,
        "approval_required": needs_approval(rollout),
        "total_devices": summary.total,
        "skipped": dict(sorted(summary.skipped.items())),
        "batches": batches,
        "upgrade_paths": [
            {"from": running, "via": list(via), "devices": count}
            for (running, via), count in sorted(summary.upgrade_paths.items())
        ],
        "estimated_duration_seconds": estimate_duration(
            rollout, [batch["devices"] for batch in batches], longest_path, now
        ),
    }


def _digest(image: str, tag: str, digest: str | None) -> str | None:
    """The digest the rollout would have when its devices are chosen: the
    given one, or the registry's answer for the tag, as the worker resolves
    it; by tag when the registry cannot tell."""
    if digest or not settings.REGISTRY_RESOLVE_DIGESTS:
        return digest
    try:
        return resolve_digest_cached(image, tag)
    except RegistryError:
        return None


def estimate_duration(rollout: Rollout, batches: list[int], longest_path: int, now: datetime) -> int:
    """Seconds from start to completion if every device turns healthy.

    A round of releases takes the engine's observed verdict time (median
    time from scheduling to a healthy verdict over recent rollouts of the
    image, else of any image, else the health-check timeout), once per
    stepping stone of the longest upgrade path plus once for the push, plus
    a tick. A batch takes one round, or with a ramp as many as the ramp
    needs to release it (at most `ramp_initial + ramp_factor x healthy`
    released). Batches start `batch_delay_minutes` apart and only inside the
    maintenance window.
    """
    if not batches:
        return 0
    per_round = timedelta(
        seconds=verdict_seconds(rollout) * (1 + longest_path) + settings.ROLLOUT_TICK_SECONDS
    )
    delay = timedelta(minutes=rollout.batch_delay_minutes)
    moment, healthy = now, 0
    for number, size in enumerate(batches):
        if number:
            moment += delay
        if rollout.maintenance_window:
            moment = next_window_opening(rollout.maintenance_window, moment)
        rounds, healthy = ramp_rounds(rollout, healthy, healthy + size)
        moment += per_round * rounds
    return round((moment - now).total_seconds())


def ramp_rounds(rollout: Rollout, healthy: int, goal: int) -> tuple[int, int]:
    """Rounds of releases until `goal` devices of the rollout are healthy,
    starting from `healthy`; and the healthy count then."""
    if rollout.ramp_initial is None:
        return 1, goal
    rounds = 0
    while healthy < goal:
        healthy = min(goal, rollout.ramp_initial + math.floor(rollout.ramp_factor * healthy))
        rounds += 1
    return max(rounds, 1), goal


def verdict_seconds(rollout: Rollout) -> float:
    for recent in (
        Rollout.objects.filter(image=rollout.image, started_at__isnull=False),
        Rollout.objects.filter(started_at__isnull=False),
    ):
        rollout_ids = recent.order_by("-created_at").values("pk")[:RECENT_ROLLOUTS]
        rows = RolloutDevice.objects.filter(
            rollout__in=rollout_ids, status=DeviceStatus.HEALTHY, scheduled_at__isnull=False
        ).order_by("-verdict_at")[:RECENT_VERDICTS]
        times = [
            (verdict - scheduled).total_seconds()
            for scheduled, verdict in rows.values_list("scheduled_at", "verdict_at")
            if verdict and verdict >= scheduled
        ]
        if times:
            return median(times)
    if not rollout.health_check_enabled:
        return float(settings.ROLLOUT_TICK_SECONDS)
    return float(rollout.health_check_timeout_seconds)
