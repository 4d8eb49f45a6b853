"""Counters and histograms kept in the database: rolled up from the rollout
event log exactly once, added to by concurrent processes without losing an
increment, and served by /metrics."""

from datetime import timedelta

from rollouts.streams import cursor as cursor_module

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from counters.models import Counter
from counters.services import counter_add, histogram_observe
from fleet.metrics import render_metrics
from rollouts.counting import rollout_counters_rollup
from rollouts.models import EventType
from rollouts.services.events import event_record

from .concurrency import run_together
from .rollout_helpers import IMAGE, build_fleet, create_rollout, policy


def _samples() -> dict:
    body, _ = render_metrics()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


@pytest.fixture(autouse=True)
def _no_wait_for_gaps(monkeypatch):
    # Ids skipped by rolled-back test transactions are settled at once.
    monkeypatch.setattr(cursor_module, "GAP_MIN_AGE_SECONDS", 0)


@pytest.fixture
def rollout(transactional_db):
    build_fleet(1)
    policy()
    rollout = create_rollout()
    rollout.started_at = timezone.now() - timedelta(seconds=90)
    rollout.save(update_fields=["started_at"])
    return rollout


def _record(rollout, event_type, **extra):
    return event_record(rollout=rollout, event_type=event_type, message="m", now=timezone.now(), **extra)


def test_it_counts_each_event_once_however_often_it_rolls_up(rollout):
    _record(rollout, EventType.HEALTH_CHECK_PASSED)
    _record(rollout, EventType.HEALTH_CHECK_FAILED)
    _record(rollout, EventType.DEVICE_FAILED)
    _record(rollout, EventType.ROLLOUT_COMPLETED)
    rollout_counters_rollup()
    rollout_counters_rollup()
    samples = _samples()  # a scrape rolls up once more
    assert samples[("fleet_device_updates_total", (("image", IMAGE), ("result", "healthy")))] == 1
    assert samples[("fleet_device_updates_total", (("image", IMAGE), ("result", "failed")))] == 2
    assert samples[("fleet_rollouts_finished_total", (("status", "completed"),))] == 1
    assert samples[("fleet_rollout_duration_seconds_count", ())] == 1
    assert 89 <= samples[("fleet_rollout_duration_seconds_sum", ())] <= 200
    assert samples[("fleet_rollout_duration_seconds_bucket", (("le", "60.0"),))] == 0
    assert samples[("fleet_rollout_duration_seconds_bucket", (("le", "300.0"),))] == 1


def test_concurrent_increments_are_all_kept(transactional_db):
    run_together(*[lambda: counter_add("fleet_x_total", {"a": "b"}) for _ in range(8)])
    assert Counter.objects.get(name="fleet_x_total").value == 8


def test_histograms_are_cumulative(transactional_db):
    histogram_observe("fleet_engine_tick_seconds", {}, 0.3)
    histogram_observe("fleet_engine_tick_seconds", {}, 7)
    samples = _samples()
    bucket = lambda le: samples[("fleet_engine_tick_seconds_bucket", (("le", le),))]  # noqa: E731
    assert (bucket("0.25"), bucket("0.5"), bucket("10.0"), bucket("+Inf")) == (0, 1, 2, 2)
    assert samples[("fleet_engine_tick_seconds_count", ())] == 2


def _breached(*, auto_rollback: bool):
    """The real engine: auto strategy over 10 devices, 4 crash, the
    threshold pauses the rollout (and rolls back, when the policy says so)."""
    from django.db import transaction

    from .rollout_helpers import T0, push, report, scheduled_device_ids, seconds, tick

    with transaction.atomic():
        build_fleet(10)
        policy(update_strategy="auto", min_failure_samples=1, auto_rollback_enabled=auto_rollback)
        rollout = push(now=T0)
        crashed = sorted(scheduled_device_ids(rollout))[:4]
        report(crashed, tag="v2.0.0", status="exited", health="none", at=T0 + seconds(30))
        for at in (45, 60):
            tick(T0 + seconds(at))
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    return rollout


AUTO = ("fleet_auto_rollbacks_total", (("image", IMAGE),))
ROLLED_BACK_DEVICES = ("fleet_device_updates_total", (("image", IMAGE), ("result", "rolled_back")))


def test_it_counts_a_threshold_breach_that_rolled_back_as_an_automatic_rollback(transactional_db):
    _breached(auto_rollback=True)
    # The first pass notes the ids that earlier tests' rolled-back
    # transactions left out; the next ones settle past them.
    rollout_counters_rollup()
    samples = _samples()
    assert samples[AUTO] == 1
    assert samples[ROLLED_BACK_DEVICES] == 10


def test_a_breach_without_auto_rollback_and_an_operator_s_roll_back_all_are_not_automatic(transactional_db):
    from rollouts.services import rollout_rollback_all

    rollout = _breached(auto_rollback=False)
    rollout_rollback_all(rollout_id=rollout.pk, actor="ops")
    rollout_counters_rollup()
    samples = _samples()
    assert AUTO not in samples
    assert samples[ROLLED_BACK_DEVICES] == 10
