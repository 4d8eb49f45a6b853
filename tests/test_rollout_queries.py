"""The number of queries of one tick does not grow with the fleet.

The same phases are measured for 100 and 5,000 devices and pinned to the
same numbers: an N+1 anywhere in the tick breaks the 5,000 case.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from .rollout_helpers import (
    T0,
    build_fleet,
    minutes,
    policy,
    push,
    report,
    scheduled_device_ids,
    tick,
)

pytestmark = pytest.mark.django_db

# Every tick: the list of active rollouts, the completed ones with deferred
# devices to watch, then per rollout a savepoint, its row lock and the
# release: 5.
# + judge (deferred devices back but taken over, step, updated or back from
# deferral, its events; step, 5 verdict rules, their events, their outcomes
# in the service history), one
# aggregate (threshold, in flight, pending), then finish the batch (next
# batch?, save, event).
JUDGE_AND_FINISH_QUERIES = 21
# Nothing in flight during the delay: one look for deferred devices that
# came back, nothing written.
WAITING_QUERIES = 6
# + next batch?, skip rows moved elsewhere, step, schedule rows, retarget
# services with their history (one statement: rewrite the targets, close
# the replaced history rows, insert, trim), bump devices, events, save,
# batch event.
START_NEXT_BATCH_QUERIES = 15


def _queries_of_one_tick(now) -> int:
    with CaptureQueriesContext(connection) as context:
        tick(now)
    return len(context.captured_queries)


@pytest.mark.slow
@pytest.mark.parametrize("devices", [100, 5000])
def test_it_runs_a_tick_in_the_same_number_of_queries_for_100_and_5000_devices(devices):
    build_fleet(devices)
    policy(batch_delay_minutes=30)
    rollout = push(now=T0)
    ids = scheduled_device_ids(rollout)
    assert len(ids) == devices // 10
    report(ids, tag="v2.0.0", at=T0 + minutes(1))
    counts = (
        _queries_of_one_tick(T0 + minutes(1)),  # judges the whole batch, finishes it
        _queries_of_one_tick(T0 + minutes(2)),  # waits for the delay
        _queries_of_one_tick(T0 + minutes(31)),  # starts batch 2 (40% of the fleet)
    )
    assert counts == (JUDGE_AND_FINISH_QUERIES, WAITING_QUERIES, START_NEXT_BATCH_QUERIES)
    assert len(scheduled_device_ids(rollout)) == devices * 4 // 10
