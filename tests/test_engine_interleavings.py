"""Engine results that must not depend on when a concurrent write lands.

Each test injects the concurrent write at an exact point of the tick (a
report committed by a web process between two of the tick's statements sees
the same READ COMMITTED visibility as one made on the tick's connection).
"""

from collections import Counter
from unittest import mock

import pytest

from rollouts.services import engine

from .rollout_helpers import (
    T0,
    event_counts,
    minutes,
    policy,
    build_fleet,
    push,
    report,
    scheduled_device_ids,
    statuses,
    tick,
)

pytestmark = pytest.mark.django_db


def _report_after_the_updated_statement(device_ids, at):
    """Patch the tick so that the devices report healthy right after the
    statement that moves `scheduled` rows to `updated` (at the next step)."""
    real_next_step = engine._next_step
    calls = []

    def next_step(rollout):
        calls.append(rollout.pk)
        if len(calls) == 2:
            report(device_ids, tag="v2.0.0", at=at)
        return real_next_step(rollout)

    return mock.patch.object(engine, "_next_step", side_effect=next_step)


def test_it_gives_every_healthy_device_its_updated_event_when_a_report_lands_mid_tick():
    build_fleet(10)
    policy(batch_percentages=[100])
    rollout = push(now=T0)
    ids = scheduled_device_ids(rollout)
    with _report_after_the_updated_statement(ids, T0 + minutes(1)):
        tick(T0 + minutes(1))
    tick(T0 + minutes(2))
    tick(T0 + minutes(3))
    rollout.refresh_from_db()
    assert statuses(rollout) == Counter({("healthy", ""): 10})
    counts = event_counts(rollout)
    assert counts["device_updated"] == 10
    assert counts["health_check_passed"] == 10
    assert rollout.status == "completed"
