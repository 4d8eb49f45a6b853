"""Measuring tools: wall time, queries and peak memory of a step; CPU of the server."""

import os
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.db import connection
from django.test.utils import CaptureQueriesContext


@dataclass
class Step:
    seconds: float = 0.0
    queries: int = 0
    peak_bytes: int = 0


@contextmanager
def measure() -> Iterator[Step]:
    """Wall time, database queries and peak Python heap (tracemalloc) of the block.

    The steps measured this way are a handful of set-based statements each,
    so tracing allocations costs them little; it is on for ours and for the
    baseline alike.
    """
    step = Step()
    tracemalloc.start()
    try:
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            yield step
            step.seconds = time.perf_counter() - started
        step.queries = len(queries.captured_queries)
        step.peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


_TICK = os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """CPU seconds used by the gunicorn workers (children of the master) and by
    the PostgreSQL backends serving the benchmark database.

    On a machine shared with other work, wall-clock throughput moves with the
    neighbours' load; CPU per request is what our code costs, whatever else runs.
    """

    def __init__(self, master_pid: int | None):
        self.master_pid = master_pid

    def sample(self) -> dict[int, int] | None:
        if self.master_pid is None or not Path("/proc/self/stat").exists():
            return None
        pids = self.workers() + _database_backends()
        return {pid: ticks for pid in pids if (ticks := _cpu_ticks(pid)) is not None}

    def workers(self) -> list[int]:
        return [pid for pid, ppid in _processes() if ppid == self.master_pid]

    def busiest_worker_share(
        self, before: dict[int, int] | None, after: dict[int, int] | None
    ) -> float | None:
        """Of the CPU the gunicorn workers used since `before`, the share of the
        busiest one: 0.5 is an even split of two workers, 1.0 one worker alone.
        wrk's keep-alive connections stay with the worker that accepted them,
        and which one does is up to the kernel."""
        if before is None or after is None:
            return None
        used = [after[pid] - before.get(pid, 0) for pid in self.workers() if pid in after]
        return max(used) / sum(used) if used and sum(used) else None

    def seconds_since(self, before: dict[int, int] | None) -> float | None:
        return self.seconds_between(before, self.sample())

    @staticmethod
    def seconds_between(before: dict[int, int] | None, after: dict[int, int] | None) -> float | None:
        if before is None or after is None:
            return None
        # A process that started since then counts from zero.
        return sum(ticks - before.get(pid, 0) for pid, ticks in after.items()) / _TICK


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    return text.rsplit(")", 1)[1].split()


def _processes() -> Iterator[tuple[int, int]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            yield int(entry.name), int(fields[1])


def _cpu_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # utime and stime: fields 14 and 15 of proc(5), counted from the state (3).
    return int(fields[11]) + int(fields[12]) if fields else None


def _database_backends() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return [row[0] for row in cursor.fetchall()]
