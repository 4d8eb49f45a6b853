"""Celery beat's scheduler (CELERY_BEAT_SCHEDULER), reconnecting after a
failed publish.

A publish that fails on a connection error (the SQLite broker of bin/run
locked past its busy timeout, Redis restarting) leaves beat's cached
producer on a closed channel: kombu's retry reconnects the connection, but
the producer's exchange stays bound to the dead channel, and every later
publish fails with "channel disconnected". Beat kept running and never sent
a tick again. Here a failed publish drops the producer and its connection,
so the next due entry publishes on a fresh one.
"""

import logging

from celery.beat import PersistentScheduler

logger = logging.getLogger(__name__)


class ReconnectingScheduler(PersistentScheduler):
    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        try:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        except Exception:
            self._drop_broker_connection()
            raise  # apply_entry logs it, as before

    def _drop_broker_connection(self) -> None:
        # Both are cached properties: gone from __dict__, they are made anew.
        self.__dict__.pop("producer", None)
        connection = self.__dict__.pop("connection", None)
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 (it is being thrown away)
                logger.debug("closing the old broker connection failed", exc_info=True)
