"""The Procfile is the one definition of the processes: compose.yaml runs the
same commands, and started as honcho starts it (PostgreSQL, Redis, only the
settings of the contract in the environment) the control plane answers."""

import json
import os
import signal
import time
import shlex
import urllib.request
from pathlib import Path

import httpx
import pytest
import yaml

from .factories import operator
from .processes import ROOT, procfile_commands, procfile_stack, web_process
from .stream_scenario import Operator, check_streams

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
    with procfile_stack(tmp_path) as (base_url, _):
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=30) as response:
            body = json.load(response)
        assert body == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
        # Over plain http, with only the contract's settings: answered, not
        # redirected to https (agents on a LAN speak http).
        answer = httpx.get(f"{base_url}/api/v1/webhooks/docker-registry/test", follow_redirects=False)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


@pytest.mark.django_db(transaction=True)
def test_the_web_process_alone_takes_no_setting_from_the_test_runner_s_environment(tmp_path: Path, monkeypatch):
    # Were the runner's environment passed on, this would redirect plain http.
    monkeypatch.setenv("SECURE_SSL_REDIRECT", "true")
    with web_process(tmp_path) as base_url:
        answer = httpx.get(f"{base_url}/api/v1/webhooks/docker-registry/test", follow_redirects=False)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


@pytest.mark.django_db(transaction=True)
def test_it_streams_rollout_events_live_and_after_a_reconnect(tmp_path: Path):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    admin = User.objects.create_superuser("streams-admin", "a@example.com", "unused-password")
    _, forbidden_token = operator(username="no-permissions")
    with procfile_stack(tmp_path, EVENT_STREAM_KEEPALIVE_SECONDS="4") as (base_url, _):
        check_streams(Operator(base_url, Token.objects.create(user=admin).key), forbidden_token=forbidden_token)


@pytest.mark.django_db(transaction=True)
def test_it_ends_open_streams_promptly_when_web_stops(tmp_path: Path):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    admin = User.objects.create_superuser("streams-admin", "a@example.com", "unused-password")
    token = Token.objects.create(user=admin).key
    with procfile_stack(tmp_path, GRACEFUL_TIMEOUT="60") as (base_url, processes):
        stream = Operator(base_url, token).stream("/api/v1/events/stream")
        web = processes["web"]
        started = time.monotonic()
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=60)
        assert time.monotonic() - started < 30, "web waited for the stream to end"
        stream.close()
