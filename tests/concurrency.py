"""Threads with their own database connections, for race tests on PostgreSQL."""

import threading
from collections.abc import Callable

from django.db import connection

from rollouts.services import rollouts_advance_all


def run_together(*calls: Callable[[], object]) -> None:
    """Run the calls in threads released at the same moment; re-raise the
    first error of any of them."""
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call):
        barrier.wait(timeout=10)
        call()

    threads = [start(lambda call=call: run(call), errors) for call in calls]
    join(threads, errors)


def two_ticks_at_once(now) -> None:
    """Two engine ticks at the same virtual time, released together, each on
    its own connection: the row lock of one is contended by the other."""
    run_together(lambda: rollouts_advance_all(now=now), lambda: rollouts_advance_all(now=now))


def start(call: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    """Start `call` in a thread with its own connection; errors are collected."""

    def run():
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - reported by join()
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def join(threads: list[threading.Thread], errors: list[BaseException]) -> None:
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]
