"""Wake waiting event streams when a transaction that wrote events commits.

With REDIS_URL: the writer PUBLISHes on a channel after commit, and one
listener thread per web process (subscribed on first use) wakes every stream
of that process. Without it (bin/run's embedded SQLite default), that thread
instead looks at the newest event id once a second. Either way a stream
sleeps on a condition variable and holds no database connection meanwhile.
A lost wake-up only delays an event: streams look again on every keep-alive.
"""

import logging
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)

# Embedded default only: how often the listener looks for new events.
POLL_SECONDS = 1.0
RECONNECT_SECONDS = 1.0

# Called after the commit of every transaction that wrote rollout events
# (notifications registers its dispatcher here; rollouts knows no consumer).
_after_commit_listeners: list[Callable[[], None]] = []


def on_events_committed(listener: Callable[[], None]) -> None:
    if listener not in _after_commit_listeners:
        _after_commit_listeners.append(listener)


def events_written() -> None:
    """Call in the transaction that wrote events: after its commit, streams
    wake and listeners run. Outside a transaction it happens at once."""
    transaction.on_commit(_after_commit)


def _after_commit() -> None:
    _publish()
    for listener in _after_commit_listeners:
        try:
            listener()
        except Exception:  # the events are stored; a periodic pass catches up
            logger.exception("after-commit listener %r failed", listener)


def channel_name() -> str:
    # Redis channels ignore the database number: name the database, so two
    # deployments (or test runs) sharing one Redis do not wake each other.
    return f"fleet:rollout-events:{settings.DATABASES['default']['NAME']}"


_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
    return _client


def _publish() -> None:
    if not settings.REDIS_URL:
        return
    try:
        _redis().publish(channel_name(), b"1")
    except redis.RedisError:
        logger.warning("could not publish an event wake-up; streams catch up on their next look")


class EventHub:
    """One per process: a counter that grows whenever events may have been
    committed, and the condition streams wait on for it to grow."""

    def __init__(self):
        self._condition = threading.Condition()
        self._generation = 0
        self._listener: threading.Thread | None = None
        self.stopping = False

    @property
    def generation(self) -> int:
        return self._generation

    def wait(self, seen_generation: int, timeout: float) -> int:
        """Block until something newer than `seen_generation` happened, the
        process stops, or `timeout` passes; returns the current generation."""
        self._ensure_listener()
        with self._condition:
            self._condition.wait_for(
                lambda: self._generation != seen_generation or self.stopping, timeout
            )
            return self._generation

    def wake(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def stop(self) -> None:
        self.stopping = True
        self.wake()

    def _ensure_listener(self) -> None:
        if self._listener is not None:
            return
        with self._condition:
            if self._listener is None:
                target = self._listen_redis if settings.REDIS_URL else self._poll_database
                self._listener = threading.Thread(target=target, name="event-hub", daemon=True)
                self._listener.start()

    def _listen_redis(self) -> None:
        while not self.stopping:
            try:
                pubsub = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=2, health_check_interval=30
                ).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel_name())
                # Anything committed while we were not subscribed: look again.
                self.wake()
                while not self.stopping:
                    if pubsub.get_message(timeout=5.0) is not None:
                        self.wake()
            except redis.RedisError:
                logger.warning("event wake-up channel lost; reconnecting", exc_info=True)
                time.sleep(RECONNECT_SECONDS)

    def _poll_database(self) -> None:
        from ..models import RolloutEvent

        latest = None
        while not self.stopping:
            try:
                newest = RolloutEvent.objects.order_by("-id").values_list("id", flat=True).first()
            except Exception:  # the database may be briefly locked or away
                logger.warning("event poll failed", exc_info=True)
                newest = None
            finally:
                # This thread must not keep a connection while it sleeps.
                connection.close()
            if newest != latest:
                latest = newest
                self.wake()
            time.sleep(POLL_SECONDS)


hub = EventHub()


def stop_streams() -> None:
    """The process is stopping: end every open stream now."""
    hub.stop()
