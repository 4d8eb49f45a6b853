"""One reader of new rollout events per web process, shared by its streams.

A listener thread wakes on Redis pub/sub (REDIS_URL; the writer publishes
after commit) or, on bin/run's SQLite default, looks once a second. Woken,
it moves the process's committed-order cursor (rollouts.streams.cursor),
reads the newly settled events once, renders each SSE message once, keeps
the latest WINDOW_EVENTS of them in memory and wakes every stream. A stream
then takes its events from memory: 50 streams cost one read per commit, not
fifty, and hold no database connection while they wait. Streams that need
the database (a replay older than the window, a member's scoped view) read
only up to the hub's settled position, so they never run ahead of it.
"""

import bisect
import json
import logging
import threading
import time

import redis
from django.conf import settings
from django.db import connection
from django.db.models import F

from ..models import RolloutEvent
from ..serializers import RolloutEventSerializer
from .cursor import CommittedEventCursor
from .wakeup import channel_name

logger = logging.getLogger(__name__)

# Events kept in memory per process: a client that reconnects within this
# many events replays from memory.
WINDOW_EVENTS = 2000
# On start the hub settles this many ids back, so that an event committed
# late by a transaction already running is not skipped.
START_LOOKBACK_IDS = 1000
# Without a wake-up, look anyway this often (a lost message only delays).
IDLE_LOOK_SECONDS = 5.0
# While a missing id may still commit, look again this often.
GAP_LOOK_SECONDS = 0.25
# The embedded default has no pub/sub: it looks this often.
POLL_SECONDS = 1.0
RECONNECT_SECONDS = 1.0

ROW_FIELDS = ("id", "rollout_id", "event_type", "device_uuid", "message", "data", "timestamp")


def sse_message(row: dict) -> bytes:
    """`id`, `event`, `data` (the event as in the events list, plus rollout_id)."""
    event = RolloutEvent(**{field: row[field] for field in ROW_FIELDS})
    payload = {**RolloutEventSerializer(event).data, "rollout_id": str(row["rollout_id"])}
    data = json.dumps(payload, separators=(",", ":"))
    return f"id: {row['id']}\nevent: {row['event_type']}\ndata: {data}\n\n".encode()


def read_events(events, after: int, up_to: int, limit: int | None = None) -> list[dict]:
    """Rows of `events` with after < id <= up_to, in id order, with the
    rollout's image; the connection is closed after the read."""
    try:
        rows = events.filter(id__gt=after, id__lte=up_to).order_by("id").values(
            *ROW_FIELDS, image=F("rollout__image")
        )
        return list(rows[:limit] if limit else rows)
    finally:
        connection.close()


class EventHub:
    def __init__(self):
        self._condition = threading.Condition()
        # The listener's cursor runs ahead while it reads; streams see
        # `_position`, which moves only together with the window.
        self._cursor: CommittedEventCursor | None = None
        self._position = 0
        self._ids: list[int] = []
        self._rows: list[dict] = []
        # Every visible event with floor < id <= position is in the window.
        self._floor = 0
        self._generation = 0
        self._listener: threading.Thread | None = None
        self.stopping = False

    # --- for streams -------------------------------------------------------

    def start(self) -> None:
        """Make sure this process's hub reads (on a stream's first request)."""
        if self._listener is not None:
            return
        with self._condition:
            if self._listener is None:
                self._begin()

    @property
    def position(self) -> int:
        """Every event up to here is settled and in the window (or older
        than it): what a stream may move up to."""
        return self._position

    @property
    def generation(self) -> int:
        return self._generation

    def wait(self, seen_generation: int, timeout: float) -> int:
        """Block until the hub read something after `seen_generation`, the
        process stops, or `timeout` passes; returns the current generation."""
        with self._condition:
            self._condition.wait_for(
                lambda: self._generation != seen_generation or self.stopping, max(timeout, 0)
            )
            return self._generation

    def window_after(self, position: int) -> tuple[list[dict], int] | None:
        """The kept events after `position` up to the hub's position, and that
        position; None when the window does not reach back to `position`."""
        with self._condition:
            settled = self._position
            if position >= settled:
                return [], position
            if position < self._floor:
                return None
            start = bisect.bisect_right(self._ids, position)
            return self._rows[start:], settled

    def stop(self) -> None:
        self.stopping = True
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    # --- the listener thread -----------------------------------------------

    def _begin(self) -> None:
        try:
            latest = RolloutEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        finally:
            connection.close()
        start = max(latest - START_LOOKBACK_IDS, 0)
        self._cursor = CommittedEventCursor(position=start)
        self._position = self._floor = start
        target = self._listen_redis if settings.REDIS_URL else self._poll_database
        self._listener = threading.Thread(target=target, name="event-hub", daemon=True)
        self._listener.start()

    def _read(self) -> None:
        """Settle what committed since the last read and publish it."""
        before = self._cursor.position
        try:
            after, up_to = self._cursor.advance()
            rows = read_events(RolloutEvent.objects.all(), after, up_to) if up_to > after else []
        except Exception:  # the database may be briefly away; look again later
            logger.warning("event hub read failed", exc_info=True)
            # From where the last read ended: the events not read are read then.
            self._cursor.position = before
            connection.close()
            return
        finally:
            connection.close()
        for row in rows:
            row["sse"] = sse_message(row)
        with self._condition:
            self._ids.extend(row["id"] for row in rows)
            self._rows.extend(rows)
            if len(self._rows) > WINDOW_EVENTS:
                dropped = len(self._rows) - WINDOW_EVENTS
                self._floor = self._ids[dropped - 1]
                del self._ids[:dropped], self._rows[:dropped]
            # Published only now, with the rows: a stream that looked while
            # they were being read would otherwise have moved past them.
            self._position = up_to
            self._generation += 1
            self._condition.notify_all()

    def _next_look(self) -> float:
        return GAP_LOOK_SECONDS if self._cursor.waiting_for_gap else IDLE_LOOK_SECONDS

    def _listen_redis(self) -> None:
        while not self.stopping:
            try:
                pubsub = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30
                ).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel_name())
                while not self.stopping:
                    # Anything committed while we were not subscribed, a
                    # pending gap, or a wake-up: read.
                    self._read()
                    message = pubsub.get_message(timeout=self._next_look())
                    # Several commits in a burst: one read for all of them.
                    while message is not None:
                        message = pubsub.get_message(timeout=0)
            except redis.RedisError:
                logger.warning("event wake-up channel lost; reconnecting", exc_info=True)
                time.sleep(RECONNECT_SECONDS)

    def _poll_database(self) -> None:
        while not self.stopping:
            self._read()
            time.sleep(GAP_LOOK_SECONDS if self._cursor.waiting_for_gap else POLL_SECONDS)


hub = EventHub()


def stop_streams() -> None:
    """The process is stopping: end every open stream now."""
    hub.stop()
