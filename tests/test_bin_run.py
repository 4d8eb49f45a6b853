"""bin/run as a developer runs it: the Procfile's processes on the embedded
defaults (SQLite, the SQLite broker), the admin login printed, Ctrl-C stops
everything."""

import json
import os
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .processes import bin_run, checkout_copy, eventually

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
