"""Upgrade paths: stepping stones (`required_versions`) inside one rollout.

A row whose device runs a version below a stepping stone carries the stones
it goes through (`via`, decided by the fan-out) and how many it has passed
(`hop`). While on the way its `new_tag` / `new_digest` name the stone it is
sent now, so the engine judges and retargets it like any row; once it is
judged healthy there, it is sent the next stone, or the push. Its `old_tag`
stays the version it ran before the rollout: a rollback goes there, never to
a stone.
"""

from datetime import datetime

from ..models import DeviceStatus, Rollout, RolloutDevice


def next_hop_rows(rollout: Rollout, *, step: int, now: datetime) -> int:
    """Move the rows judged healthy on a stepping stone to the next version
    of their path, tagged with `step` (the caller retargets their services
    and writes their events). One statement per distinct (path, hop): a
    rollout has few. Returns how many rows moved."""
    healthy_on_the_way = RolloutDevice.objects.filter(
        rollout=rollout, status=DeviceStatus.HEALTHY
    ).exclude(via=[])
    distinct = healthy_on_the_way.order_by().values_list("via", "hop").distinct()
    pairs = {(tuple(via), hop) for via, hop in distinct}
    moved = 0
    for via, hop in sorted(pairs):
        if hop >= len(via):
            continue  # healthy on the push itself: done
        tag, digest = next_version(rollout, list(via), hop + 1)
        moved += healthy_on_the_way.filter(via=list(via), hop=hop).update(
            hop=hop + 1,
            new_tag=tag,
            new_digest=digest,
            status=DeviceStatus.SCHEDULED,
            scheduled_at=now,
            timer_started_at=now,
            verdict_at=None,
            step=step,
        )
    return moved


def next_version(rollout: Rollout, via: list[str], hop: int) -> tuple[str, str | None]:
    """The version a row on its `hop`-th step is sent: a stone (with the
    digest resolved for it), or the push once every stone is passed."""
    if hop < len(via):
        return via[hop], rollout.via_digests.get(via[hop])
    return rollout.new_tag, rollout.new_digest
