"""The Procfile is the one definition of the processes: compose.yaml runs the
same commands, and started as honcho starts it (PostgreSQL, Redis, only the
settings of the contract in the environment) the control plane answers."""

import json
import shlex
import urllib.request
from pathlib import Path

import pytest
import yaml

from .processes import ROOT, procfile_commands, procfile_stack

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_it_names_web_worker_and_beat():
    assert {"web", "worker", "beat"} <= set(procfile_commands())


def test_it_is_what_compose_runs():
    for name, command in procfile_commands().items():
        assert COMPOSE["services"][name]["command"] == shlex.split(command), name


def test_it_is_what_the_docker_image_runs_by_default():
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    assert json.loads(cmd.removeprefix("CMD ")) == shlex.split(procfile_commands()["web"])


@pytest.mark.django_db(transaction=True)
def test_it_serves_and_is_ready_on_postgresql_and_redis(tmp_path: Path):
    with procfile_stack(tmp_path) as base_url:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=30) as response:
            body = json.load(response)
        assert body == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
