"""Maintenance windows: `{"days": ["sat", "sun"], "start": "02:00", "end": "06:00",
"timezone": "Europe/Berlin"}`. A window whose end is not after its start runs
past midnight into the next day (22:00-04:00); its days name the day it opens."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_clock(text: str) -> time:
    hours, _, minutes = text.partition(":")
    return time(int(hours), int(minutes))


def window_is_open(window: dict | None, now: datetime) -> bool:
    """Whether `now` (aware) lies inside the window; no window is always open."""
    if not window:
        return True
    local = now.astimezone(ZoneInfo(window["timezone"]))
    start, end = parse_clock(window["start"]), parse_clock(window["end"])
    days = set(window.get("days") or DAYS)
    today = DAYS[local.weekday()]
    yesterday = DAYS[(local.weekday() - 1) % 7]
    clock = local.time()
    if start < end:
        return today in days and start <= clock < end
    # Past midnight: open from `start` on an allowed day until `end` the next day.
    return (today in days and clock >= start) or (yesterday in days and clock < end)


def next_window_opening(window: dict | None, now: datetime) -> datetime:
    """The first moment at or after `now` when the window is open (minute steps
    are enough: windows are defined in minutes)."""
    if window_is_open(window, now):
        return now
    candidate = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(8 * 24 * 60):
        if window_is_open(window, candidate):
            return candidate
        candidate += timedelta(minutes=1)
    raise ValueError("maintenance window never opens")
