"""The broker `bin/run` uses when no REDIS_URL is given: kombu's SQLAlchemy
transport on a SQLite file, shared by web, worker and beat processes."""

import os
import subprocess
import sys
import threading
from pathlib import Path

from kombu import Connection

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = 300


def test_it_uses_a_sqlite_broker_under_var_when_no_redis_url_is_set():
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "DATABASE_URL")
    }
    env.update(SECRET_KEY="x", ENV_FILE="", DJANGO_SETTINGS_MODULE="fleet.settings")
    code = "import django; django.setup(); from django.conf import settings; print(settings.CELERY_BROKER_URL)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"sqla+sqlite:///{ROOT / 'var' / 'broker.sqlite3'}"


def test_it_delivers_every_message_once_while_another_connection_writes(tmp_path):
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    errors: list[BaseException] = []

    def produce():
        try:
            with Connection(url) as connection:
                queue = connection.SimpleQueue("tasks")
                for number in range(MESSAGES):
                    queue.put({"n": number})
                queue.close()
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    received = []
    with Connection(url) as connection:
        queue = connection.SimpleQueue("tasks")
        producer = threading.Thread(target=produce)
        producer.start()
        while len(received) < MESSAGES:
            message = queue.get(timeout=20)
            received.append(message.payload["n"])
            message.ack()
        producer.join(timeout=20)
        queue.close()
    assert not errors
    assert sorted(received) == list(range(MESSAGES))
