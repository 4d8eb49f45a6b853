"""Two ticks at once on real PostgreSQL (each thread its own connection):
the ramp never releases a device twice nor past its bound, and a failed
device is retried once."""

from collections import Counter

import pytest
from django.utils import timezone

from rollouts.models import RolloutDevice

from .concurrency import two_ticks_at_once
from .rollout_helpers import (
    build_fleet,
    event_counts,
    policy,
    push,
    report,
    scheduled_device_ids,
    seconds,
    target_versions,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_ticks_release_each_device_once_and_within_the_ramp():
    build_fleet(300)
    policy(ramp_initial=10, ramp_factor=2, batch_percentages=[100])
    start = timezone.now()
    rollout = push(now=start)
    now = start
    for _ in range(30):
        now += seconds(15)
        report(scheduled_device_ids(rollout), tag="v2.0.0", at=now)
        two_ticks_at_once(now)
        rows = RolloutDevice.objects.filter(rollout=rollout)
        healthy = rows.filter(status="healthy").count()
        assert rows.filter(attempts__gt=0).count() <= 10 + 2 * healthy
        rollout.refresh_from_db()
        if rollout.status == "completed":
            break
    assert rollout.status == "completed"
    # Each device was moved once: one bump, one scheduled event.
    assert target_versions() == Counter({2: 300})
    scheduled = rollout.events.filter(event_type="image.device_scheduled")
    assert scheduled.count() == scheduled.values("device_uuid").distinct().count() == 300


def test_concurrent_ticks_retry_a_failed_device_once():
    build_fleet(40)
    policy(update_strategy="auto", max_retries=1, max_failure_rate=0.9)
    start = timezone.now()
    rollout = push(now=start)
    ids = sorted(scheduled_device_ids(rollout))
    crashed, fine = ids[:10], ids[10:]
    report(fine, tag="v2.0.0", at=start + seconds(20), towards=2)
    report(crashed, tag="v2.0.0", status="exited", health="none", at=start + seconds(20), towards=2)
    two_ticks_at_once(start + seconds(30))
    two_ticks_at_once(start + seconds(31))
    rows = RolloutDevice.objects.filter(rollout=rollout, device_id__in=crashed)
    assert Counter(rows.values_list("status", "attempts")) == Counter({("scheduled", 2): 10})
    assert target_versions(crashed) == Counter({3: 10})
    assert event_counts(rollout)["device_retried"] == 10
