"""How many threads a web process runs, shared by gunicorn.conf.py and the
event streams, so the stream cap and the thread count cannot drift apart.

Plain `os.environ` on purpose: gunicorn reads this before Django's settings
exist.
"""

import os


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


# Threads that serve ordinary requests (device polls and reports, the API):
# event streams can never take these.
REQUEST_THREADS = _positive_int("WEB_THREADS", 8)
# Concurrent event streams one web process holds; the next one answers 503.
# Each stream owns a thread that sleeps on a wake-up and holds no database
# connection while idle.
STREAMS_PER_PROCESS = _positive_int("EVENT_STREAMS_PER_PROCESS", 50)
THREADS_PER_PROCESS = REQUEST_THREADS + STREAMS_PER_PROCESS
