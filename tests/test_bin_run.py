"""bin/run as a developer runs it: the Procfile's processes on the embedded
defaults (SQLite, the SQLite broker), the admin login printed, Ctrl-C stops
everything."""

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .processes import bin_run, checkout_copy, eventually
from .stream_scenario import Operator, check_streams

@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return checkout_copy(tmp_path_factory.mktemp("checkout"))


def test_it_runs_every_procfile_process_and_ctrl_c_stops_them(checkout: Path, tmp_path: Path):
    log = tmp_path / "run.log"
    with bin_run(checkout, log) as (base_url, process):
        output = log.read_text()
        assert re.search(r"password: \S+", output)
        assert re.search(r"Authorization: Token [0-9a-f]{40}", output)
        assert "sqlite3" in output and "sqla+sqlite" in output
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=30) as response:
            assert json.load(response)["status"] == "ok"
        for name in ("web", "worker", "beat"):
            assert eventually(lambda: re.search(rf"^{name} *\| ", log.read_text(), re.MULTILINE)), name

        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{base_url}/healthz", timeout=2)


def test_it_streams_rollout_events_on_the_embedded_defaults(checkout: Path, tmp_path: Path):
    log = tmp_path / "run.log"
    with bin_run(checkout, log, EVENT_STREAM_KEEPALIVE_SECONDS="4") as (base_url, _):
        token = re.search(r"Authorization: Token ([0-9a-f]{40})", log.read_text()).group(1)
        check_streams(Operator(base_url, token), forbidden_token=_token_without_permissions(checkout))


def _token_without_permissions(checkout: Path) -> str:
    """A user of bin/run's SQLite database who may do nothing."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "ENV_FILE"}}
    script = (
        "from django.contrib.auth.models import User; "
        "from rest_framework.authtoken.models import Token; "
        "user, _ = User.objects.get_or_create(username='nobody'); "
        "print(Token.objects.get_or_create(user=user)[0].key)"
    )
    result = subprocess.run(
        [".venv/bin/python", "manage.py", "shell", "--no-imports", "-c", script],
        cwd=checkout, env=env, check=True, capture_output=True, text=True,
    )
    return result.stdout.strip().splitlines()[-1]
