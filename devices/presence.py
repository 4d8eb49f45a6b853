"""Presence: when each device last polled (`Device.last_seen_at`), recorded
without a database write per poll.

A poll that finds the device's `last_seen_at` older than the presence
resolution (half a poll interval) notes the device and the poll's time in
this process's buffer; a thread of the process writes the buffer every
`DEVICE_PRESENCE_FLUSH_SECONDS` in one statement. So the poll itself only
reads, and the database sees one row write per device per half interval at
most, batched.

Staleness (what readers of `last_seen_at` may rely on): it is the time of a
real poll, never later than the device's latest poll and never more than
half a poll interval plus the flush period (30 + 5 s by default) older than
it. A web process killed without a chance to flush loses at most the flush
period of presence: the next poll of each device records it again. Reports
write `last_seen_at` directly, in their own statement.

With `DEVICE_PRESENCE_FLUSH_SECONDS = 0` the poll writes through, in the
request (one more statement when due): for tools and tests that read
`last_seen_at` right after a poll.
"""

import atexit
import logging
import os
import threading
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, connections

from .models import Device

logger = logging.getLogger(__name__)
_DEVICES = Device._meta.db_table


def presence_due(last_seen_at: datetime | None, now: datetime) -> bool:
    """Whether a poll at `now` must be recorded: the stored presence is
    older than the resolution (half a poll interval)."""
    resolution = timedelta(seconds=settings.DEVICE_POLL_INTERVAL_SECONDS / 2)
    return last_seen_at is None or now - last_seen_at >= resolution


def write_presence(seen: dict[int, datetime]) -> set[int]:
    """Write `last_seen_at` of many devices in one statement; returns the ids
    it could not write now because a transaction holds their row (the engine
    bumping a batch): those stay buffered for the next flush.

    The rows are locked in id order and locked rows are skipped, so a flush
    never waits for, nor deadlocks with, another writer. A stored time that
    is already later (a report) is kept.
    """
    if connection.vendor != "postgresql":
        return _write_presence_portably(seen)
    ids = sorted(seen)
    times = [seen[device_id] for device_id in ids]
    sql = f"""
        WITH seen AS (
            SELECT * FROM unnest(%s::bigint[], %s::timestamptz[]) AS s(id, seen_at)
        ),
        locked AS (
            SELECT d.id FROM {_DEVICES} d WHERE d.id = ANY(%s::bigint[])
            ORDER BY d.id FOR UPDATE SKIP LOCKED
        ),
        written AS (
            UPDATE {_DEVICES} d SET last_seen_at = seen.seen_at
            FROM seen
            WHERE d.id = seen.id AND d.id IN (SELECT id FROM locked)
              AND (d.last_seen_at IS NULL OR d.last_seen_at < seen.seen_at)
        )
        SELECT d.id FROM {_DEVICES} d
        WHERE d.id = ANY(%s::bigint[]) AND d.id NOT IN (SELECT id FROM locked)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids, times, ids, ids])
        return {row[0] for row in cursor.fetchall()}


def _write_presence_portably(seen: dict[int, datetime]) -> set[int]:
    """SQLite (bin/run) locks the whole database per writer: row by row."""
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {_DEVICES} SET last_seen_at = %s "
            "WHERE id = %s AND (last_seen_at IS NULL OR last_seen_at < %s)",
            [(adapt(at), device_id, adapt(at)) for device_id, at in sorted(seen.items())],
        )
    return set()


def write_presence_now(device_id: int, seen_at: datetime) -> None:
    """Write-through (DEVICE_PRESENCE_FLUSH_SECONDS = 0): one device, in the
    poll. A row another transaction holds is skipped, not waited for."""
    at = connection.ops.adapt_datetimefield_value(seen_at)
    newer = "(last_seen_at IS NULL OR last_seen_at < %s)"
    if connection.vendor == "postgresql":
        sql = (
            f'UPDATE "{_DEVICES}" SET last_seen_at = %s WHERE id = (SELECT id FROM "{_DEVICES}" '
            f"WHERE id = %s AND {newer} FOR UPDATE SKIP LOCKED)"
        )
    else:
        sql = f'UPDATE "{_DEVICES}" SET last_seen_at = %s WHERE id = %s AND {newer}'
    with connection.cursor() as cursor:
        cursor.execute(sql, [at, device_id, at])


class PresenceBuffer:
    """The polls of this process not yet written: device id -> latest poll time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: dict[int, datetime] = {}
        self._flusher_pid: int | None = None

    def note(self, device_id: int, seen_at: datetime) -> None:
        if settings.DEVICE_PRESENCE_FLUSH_SECONDS <= 0:
            write_presence_now(device_id, seen_at)
            return
        with self._lock:
            known = self._seen.get(device_id)
            if known is None or seen_at > known:
                self._seen[device_id] = seen_at
        if self._flusher_pid != os.getpid():
            self._start_flusher()

    def pending(self) -> dict[int, datetime]:
        with self._lock:
            return dict(self._seen)

    def flush(self) -> int:
        """Write what is buffered; returns how many devices were written."""
        with self._lock:
            seen, self._seen = self._seen, {}
        if not seen:
            return 0
        try:
            busy = write_presence(seen)
        except Exception:
            self._put_back(seen)
            raise
        self._put_back({device_id: seen[device_id] for device_id in busy})
        return len(seen) - len(busy)

    def _put_back(self, seen: dict[int, datetime]) -> None:
        with self._lock:
            for device_id, seen_at in seen.items():
                known = self._seen.get(device_id)
                if known is None or seen_at > known:
                    self._seen[device_id] = seen_at

    def _start_flusher(self) -> None:
        # Per process: a gunicorn worker forked from a master that had a
        # flusher does not inherit its thread.
        with self._lock:
            if self._flusher_pid == os.getpid():
                return
            self._flusher_pid = os.getpid()
        thread = threading.Thread(target=self._flush_forever, name="presence-flusher", daemon=True)
        thread.start()
        atexit.register(self._flush_quietly)

    def _flush_forever(self) -> None:
        last_flush = time.monotonic()
        while True:
            # The setting is read each time round (tests change it), in
            # steps of at most a second.
            period = settings.DEVICE_PRESENCE_FLUSH_SECONDS
            time.sleep(min(period, 1.0) if period > 0 else 1.0)
            if time.monotonic() - last_flush >= period:
                self._flush_quietly()
                last_flush = time.monotonic()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:
            # The database may be away for a moment; the devices stay buffered.
            logger.exception("Could not write device presence; will retry.")
        finally:
            # The thread holds no connection between flushes: a few
            # milliseconds of connecting every few seconds, and nothing held
            # open in a process that stopped serving.
            connections.close_all()


buffer = PresenceBuffer()


def record_poll(*, device_id: int, last_seen_at: datetime | None, now: datetime) -> bool:
    """Note that the device polled at `now`, if its presence is due; returns
    whether it was."""
    if not presence_due(last_seen_at, now):
        return False
    buffer.note(device_id, now)
    return True
