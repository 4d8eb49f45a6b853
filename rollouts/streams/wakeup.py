"""After the commit of a transaction that wrote rollout events: wake the
event streams (with REDIS_URL, a PUBLISH that every web process's hub
listens to; see hub.py) and run the registered listeners (notifications).
"""

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)

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
