"""Maintenance windows: when they are open, and batches of `scheduled` policies."""

from collections import Counter
from datetime import UTC, datetime

import pytest

from rollouts.windows import next_window_opening, window_is_open

from .rollout_helpers import (
    T0,
    build_fleet,
    policy,
    push,
    report,
    scheduled_device_ids,
    statuses,
    tick,
)

WEEKEND_NIGHTS_UTC = {"days": ["sat", "sun"], "start": "02:00", "end": "06:00", "timezone": "UTC"}
FRIDAY_NIGHT_UTC = {"days": ["fri"], "start": "22:00", "end": "04:00", "timezone": "UTC"}
WEEKEND_NIGHTS_BERLIN = {**WEEKEND_NIGHTS_UTC, "timezone": "Europe/Berlin"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_it_treats_no_window_as_always_open():
    assert window_is_open(None, T0)
    assert next_window_opening(None, T0) == T0


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        ("2026-11-07 01:59:59", False),  # Saturday, before the start
        ("2026-11-07 02:00", True),  # the start is inside
        ("2026-11-07 05:59:59", True),
        ("2026-11-07 06:00", False),  # the end is not
        ("2026-11-08 03:00", True),  # Sunday
        ("2026-11-09 03:00", False),  # Monday: not one of the days
        ("2026-11-06 03:00", False),  # Friday
    ],
)
def test_it_opens_a_same_day_window_on_its_days_only(moment, is_open):
    assert window_is_open(WEEKEND_NIGHTS_UTC, utc(moment)) is is_open


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        ("2026-11-06 21:59", False),  # Friday, before it opens
        ("2026-11-06 22:00", True),
        ("2026-11-06 23:59", True),
        ("2026-11-07 00:00", True),  # past midnight, into Saturday
        ("2026-11-07 03:59", True),
        ("2026-11-07 04:00", False),
        ("2026-11-07 22:30", False),  # Saturday evening: it opens on Fridays only
        ("2026-11-06 03:00", False),  # Friday early: that night opened on Thursday
        ("2026-11-05 23:00", False),  # Thursday
    ],
)
def test_it_runs_a_window_past_midnight_into_the_next_day(moment, is_open):
    assert window_is_open(FRIDAY_NIGHT_UTC, utc(moment)) is is_open


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        # Winter, CET = UTC+1.
        ("2026-11-07 00:30", False),  # 01:30 local
        ("2026-11-07 01:00", True),  # 02:00 local
        ("2026-11-07 04:59", True),  # 05:59 local
        ("2026-11-07 05:00", False),  # 06:00 local
        # Summer, CEST = UTC+2.
        ("2026-07-03 23:59", False),  # Saturday 01:59 local
        ("2026-07-04 00:00", True),  # 02:00 local
        ("2026-07-04 03:59", True),
        ("2026-07-04 04:00", False),  # 06:00 local
        # Spring forward, Sunday 29 March: 02:00 local does not exist.
        ("2026-03-29 00:59", False),  # 01:59 CET
        ("2026-03-29 01:00", True),  # 03:00 CEST
        ("2026-03-29 04:00", False),  # 06:00 CEST
        # Fall back, Sunday 25 October: 02:00-03:00 local happens twice.
        ("2026-10-25 00:00", True),  # 02:00 CEST
        ("2026-10-25 01:30", True),  # 02:30 CET, the second time
        ("2026-10-25 04:59", True),  # 05:59 CET
        ("2026-10-25 05:00", False),  # 06:00 CET
    ],
)
def test_it_reads_the_window_in_its_time_zone_across_dst(moment, is_open):
    assert window_is_open(WEEKEND_NIGHTS_BERLIN, utc(moment)) is is_open


def test_it_reads_the_day_in_the_window_time_zone():
    saturday_night = {**WEEKEND_NIGHTS_BERLIN, "days": ["sat"], "start": "00:30"}
    # Still Friday in UTC, already Saturday 00:45 in Berlin.
    assert window_is_open(saturday_night, utc("2026-07-03 22:45"))
    assert not window_is_open(saturday_night, utc("2026-07-04 22:45"))  # Sunday 00:45 there


@pytest.mark.parametrize(
    ("moment", "opening"),
    [
        ("2026-11-02 12:00", "2026-11-07 01:00"),  # Monday -> Saturday 02:00 CET
        ("2026-11-07 00:59:30", "2026-11-07 01:00"),
        ("2026-11-07 03:00", "2026-11-07 03:00"),  # open: now
        ("2026-11-07 05:00", "2026-11-08 01:00"),  # closed for Saturday -> Sunday
        ("2026-07-03 12:00", "2026-07-04 00:00"),  # 02:00 CEST
        ("2026-03-28 12:00", "2026-03-29 01:00"),  # 02:00 is skipped: 03:00 CEST
    ],
)
def test_it_finds_the_next_opening_of_a_window(moment, opening):
    assert next_window_opening(WEEKEND_NIGHTS_BERLIN, utc(moment)) == utc(opening)


@pytest.mark.django_db
def test_it_starts_the_batches_of_a_scheduled_policy_only_inside_the_window():
    build_fleet(100)
    policy(update_strategy="scheduled", maintenance_window=WEEKEND_NIGHTS_BERLIN)
    rollout = push(now=T0)  # Monday noon
    assert (rollout.status, rollout.current_batch) == ("in_progress", 0)
    assert rollout.next_batch_at == utc("2026-11-07 01:00")
    assert statuses(rollout) == Counter({("pending", ""): 100})
    tick(utc("2026-11-07 00:59"))
    assert statuses(rollout) == Counter({("pending", ""): 100})
    tick(utc("2026-11-07 01:00"))
    rollout.refresh_from_db()
    assert rollout.current_batch == 1
    assert len(scheduled_device_ids(rollout)) == 10

    # Batch 1 finishes inside the window; batch 2 starts after the delay.
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=utc("2026-11-07 01:05"))
    tick(utc("2026-11-07 01:05"))
    tick(utc("2026-11-07 01:35"))
    rollout.refresh_from_db()
    assert rollout.current_batch == 2

    # Batch 2 finishes too late: its delay ends after the window closed.
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=utc("2026-11-07 04:45"))
    tick(utc("2026-11-07 04:45"))
    tick(utc("2026-11-07 05:15"))
    rollout.refresh_from_db()
    assert rollout.current_batch == 2
    assert rollout.next_batch_at == utc("2026-11-08 01:00")
    tick(utc("2026-11-08 00:59"))
    assert statuses(rollout, batch=3) == Counter({("pending", ""): 50})
    tick(utc("2026-11-08 04:58"))  # two minutes before Sunday's window closes
    rollout.refresh_from_db()
    assert rollout.current_batch == 3
    assert statuses(rollout, batch=3) == Counter({("scheduled", ""): 50})
    # The last batch needs no window to complete.
    report(scheduled_device_ids(rollout), tag="v2.0.0", at=utc("2026-11-08 05:01"))
    tick(utc("2026-11-08 05:01"))
    rollout.refresh_from_db()
    assert (rollout.status, rollout.finished_at) == ("completed", utc("2026-11-08 05:01"))
