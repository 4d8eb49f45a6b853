"""Celery beat (the Procfile's command) keeps sending ticks after its broker
failed a publish: here bin/run's SQLite broker, locked by another process
for longer than a publish waits for it, as a loaded machine can."""

import os
import sqlite3
import subprocess
import time
from pathlib import Path

from . import processes


# SQLite's busy timeout (5 s) times the 4 attempts of a publish, and some.
LOCKED_SECONDS = 25


def _ticks_sent(broker: Path) -> int:
    """Tick messages in the broker (no worker takes them here)."""
    if not broker.exists():
        return 0
    with sqlite3.connect(broker, timeout=30) as connection:
        try:
            rows = connection.execute("SELECT payload FROM kombu_message").fetchall()
        except sqlite3.OperationalError:  # the table is not made yet
            return 0
    return sum("rollouts.advance_rollouts" in str(payload) for (payload,) in rows)


def test_beat_keeps_ticking_after_a_publish_failed_on_a_locked_broker(tmp_path):
    # bin/run's embedded broker lives in the checkout's var/: a copy's.
    checkout = processes.checkout_copy(tmp_path / "checkout")
    broker = checkout / "var" / "broker.sqlite3"
    env = {
        **{name: value for name, value in os.environ.items() if name != "REDIS_URL"},
        "DATABASE_URL": processes.test_database_url(),
        "ROLLOUT_TICK_SECONDS": "1",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "ENV_FILE": "",
        "PATH": f"{checkout / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    log = (tmp_path / "beat.log").open("w")
    beat = subprocess.Popen(
        processes.procfile_commands()["beat"],
        shell=True, cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert processes.eventually(lambda: _ticks_sent(broker) >= 2, seconds=90), (
            (tmp_path / "beat.log").read_text()[-3000:]
        )
        # Another process holds the broker's write lock past the busy timeout
        # of every attempt of a publish (Celery retries it 3 times): beat's
        # publish of a tick fails.
        with sqlite3.connect(broker, isolation_level=None) as lock:
            lock.execute("BEGIN EXCLUSIVE")
            time.sleep(LOCKED_SECONDS)
            lock.execute("COMMIT")
        assert processes.eventually(lambda: "Message Error" in (tmp_path / "beat.log").read_text(), 10)
        after_the_failure = _ticks_sent(broker)
        assert processes.eventually(
            lambda: _ticks_sent(broker) >= after_the_failure + 3, seconds=30
        ), (tmp_path / "beat.log").read_text()[-3000:]
    finally:
        processes.stop(beat)
