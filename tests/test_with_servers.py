"""bin/with-servers (which bin/test runs pytest under): on a machine where
nothing answers at the configured PostgreSQL and Redis URLs, the command
runs against throwaway servers started in a temporary directory on other
ports, stopped afterwards; where they answer, they are used as they are."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from . import processes

ROOT = Path(__file__).resolve().parents[1]

# Connects to both servers and says where they were.
PROBE = """
import json, os, psycopg, redis
database = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
with psycopg.connect(database) as connection:
    version = connection.execute("SHOW server_version").fetchone()[0]
redis.Redis.from_url(os.environ["REDIS_URL"]).set("with-servers-probe", "1")
print(json.dumps({"database": os.environ["DATABASE_URL"], "redis": os.environ["REDIS_URL"],
                  "postgres": version}))
"""


@pytest.fixture
def scratch():
    """The TMPDIR of the command: under the system's temporary directory,
    since as root PostgreSQL runs as `nobody`, who must reach its data."""
    path = Path(tempfile.mkdtemp(prefix="with-servers-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _closed_port() -> int:
    return processes.free_port()


def _with_servers(database_url: str, redis_url: str, *command: str, scratch: Path):
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "TMPDIR": str(scratch)}
    return subprocess.run(
        [sys.executable, str(ROOT / "bin" / "with-servers"), *command],
        env=env, capture_output=True, text=True, timeout=300,
    )


def _answers(url: str) -> bool:
    host_port = url.split("//", 1)[1].split("@")[-1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def test_it_starts_throwaway_servers_where_nothing_answers_and_stops_them(scratch):
    database_url = f"postgres://postgres@127.0.0.1:{_closed_port()}/fleet"
    redis_url = f"redis://127.0.0.1:{_closed_port()}/3"
    run = _with_servers(database_url, redis_url, sys.executable, "-c", PROBE, scratch=scratch)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["database"] != database_url and seen["database"].endswith("/fleet")
    assert seen["redis"] != redis_url and seen["redis"].endswith("/3")
    assert seen["postgres"].split(".")[0] == "18"
    assert not _answers(seen["database"]) and not _answers(seen["redis"])
    assert list(scratch.iterdir()) == []


def test_it_uses_the_servers_that_answer(scratch):
    database_url = processes.test_database_url()
    run = _with_servers(database_url, settings.REDIS_URL, sys.executable, "-c", PROBE, scratch=scratch)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen == {**seen, "database": database_url, "redis": settings.REDIS_URL}
    assert "started" not in run.stderr


def test_it_exits_with_the_command_s_status_and_still_stops_the_servers(scratch):
    database_url = f"postgres://postgres@127.0.0.1:{_closed_port()}/fleet"
    redis_url = f"redis://127.0.0.1:{_closed_port()}/0"
    show = "echo $DATABASE_URL $REDIS_URL; exit 3"
    run = _with_servers(database_url, redis_url, "sh", "-c", show, scratch=scratch)
    assert run.returncode == 3
    started_database, started_redis = run.stdout.split()
    assert not _answers(started_database) and not _answers(started_redis)
    assert list(scratch.iterdir()) == []
