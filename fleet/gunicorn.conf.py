"""gunicorn settings of the `web` process (see the Procfile).

gthread workers: ordinary requests share a pool of threads and idle keep-alive
connections wait in the worker's poller, not in a thread. Event streams run
in the same process, capped at EVENT_STREAMS_PER_PROCESS each; the pool has
that many threads on top of WEB_THREADS, so streams can never take the threads
device polls need (README, Decisions: serving the event streams).
"""

import os
import signal

from fleet.serving import THREADS_PER_PROCESS

bind = f"{os.environ.get('HOST') or '0.0.0.0'}:{os.environ.get('PORT') or '8000'}"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
worker_class = "gthread"
threads = THREADS_PER_PROCESS
# Devices poll about once a minute; a few seconds of keep-alive serves an
# agent's poll-then-report pair and the API's bursts without holding sockets.
keepalive = 5
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT") or 20)
accesslog = "-"
# Its default path is shared by every gunicorn on the machine.
control_socket_disable = True


def on_starting(server):
    """Apply migrations once, in the master, before any worker answers, so a
    bare `honcho start` on an empty database works. A no-op when compose's
    `migrate` service or bin/run already ran them; MIGRATE_ON_START=false
    turns it off."""
    if os.environ.get("MIGRATE_ON_START", "true").lower() in ("0", "false", "no", "off"):
        return
    from fleet.migrate_on_start import migrate_with_lock

    migrate_with_lock()


def post_worker_init(worker):
    """End open event streams as soon as the worker is told to stop, instead
    of holding the graceful shutdown for its whole timeout: clients reconnect
    with Last-Event-ID and lose nothing."""
    from rollouts.streams.hub import stop_streams

    stop_gunicorn = worker.handle_exit

    def handle_exit(signum, frame):
        stop_streams()
        stop_gunicorn(signum, frame)

    signal.signal(signal.SIGTERM, handle_exit)


# Refused before Django sees them (README, Decisions: request limits): a
# request line over 8,190 bytes (gunicorn's ceiling, just under 8 KiB) is a
# 414, a header field over 16 KiB or more than 100 header fields a 431, each
# with our JSON error body rather than gunicorn's HTML page. Bodies over their
# endpoint's limit are refused by fleet.request_limits, also before Django.
limit_request_line = 8190
limit_request_field_size = 16 * 1024
limit_request_fields = 100

from fleet.gunicorn_errors import install as install_json_errors  # noqa: E402

install_json_errors()
