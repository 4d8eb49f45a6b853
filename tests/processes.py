"""Start the control plane as operators do, for tests over real HTTP: the
processes of the Procfile (read here as honcho reads it), or bin/run in a
copy of the checkout. Every server binds a free loopback port."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]

# CONTRACT section 5: the settings operators start the control plane with.
CONTRACT_SETTINGS = frozenset({
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS",
    "DOCKER_WEBHOOK_SECRET", "ROLLOUT_TICK_SECONDS", "DEVICE_POLL_INTERVAL_SECONDS",
    "REGISTRY_CREDENTIALS", "REGISTRY_INSECURE_HOSTS", "REGISTRY_TIMEOUT_SECONDS",
    "DEVICE_HISTORY_KEEP", "METRICS_TOKEN", "NOTIFICATION_ALLOW_PRIVATE_NETWORKS",
    "PORT", "HOST", "WEB_CONCURRENCY",
})
# What the test harness itself needs besides: the commands on the PATH, no
# developer's .env, no request to the real Docker Hub for test images named
# after it, quiet logs, two worker processes on a 2-core machine.
HARNESS_SETTINGS = frozenset({
    "PATH", "ENV_FILE", "REGISTRY_RESOLVE_DIGESTS", "LOG_LEVEL", "CELERY_CONCURRENCY",
})
# The web process alone (web_process) needs besides: no migrations (the test
# database has them), and its tasks run in it, as under bin/test (there is
# no worker, and no message may be left in the test Redis for a later test's).
WEB_ALONE_SETTINGS = HARNESS_SETTINGS | {"MIGRATE_ON_START", "CELERY_TASK_ALWAYS_EAGER"}


def procfile_commands(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """`name: command` per line, as honcho and foreman read it."""
    commands = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, command = line.split(":", 1)
        commands[name.strip()] = command.strip()
    return commands


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_database_url() -> str:
    database = connection.settings_dict
    login = database["USER"] + (f":{database['PASSWORD']}" if database["PASSWORD"] else "")
    return f"postgres://{login}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


def eventually(check, seconds: float = 30, interval: float = 0.1):
    """The first truthy answer of `check`, or None once `seconds` passed."""
    deadline = time.monotonic() + seconds
    while True:
        answer = check()
        if answer or time.monotonic() > deadline:
            return answer
        time.sleep(interval)


def wait_for_http(url: str, processes: list[subprocess.Popen], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


def stop(process: subprocess.Popen, seconds: float = 30) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def procfile_stack(tmp_path: Path, **extra_env: str) -> Iterator[tuple[str, dict]]:
    """Every Procfile process on the test PostgreSQL database and the test
    Redis; yields the web base URL and the processes by name."""
    port = free_port()
    # Only the contract's settings (and the harness's needs): no inherited
    # environment, so the test proves that those settings are enough to run.
    env = {
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "procfile-test-secret-key",
        "DEBUG": "false",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "ROLLOUT_TICK_SECONDS": "1",
        # The commands are found as a deployment finds them: on the PATH.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ENV_FILE": "",
        "REGISTRY_RESOLVE_DIGESTS": "false",
        "CELERY_CONCURRENCY": "2",
        "LOG_LEVEL": "WARNING",
    }
    assert set(env) <= CONTRACT_SETTINGS | HARNESS_SETTINGS, set(env) - CONTRACT_SETTINGS - HARNESS_SETTINGS
    env.update(extra_env)
    processes = {}
    try:
        for name, command in procfile_commands().items():
            log = (tmp_path / f"{name}.log").open("w")
            processes[name] = (
                subprocess.Popen(
                    command,
                    shell=True,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        base_url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base_url}/healthz", list(processes.values()))
        try:
            yield base_url, processes
        except BaseException as exc:
            for name in processes:
                tail = (tmp_path / f"{name}.log").read_text()[-3000:]
                exc.add_note(f"{name}'s output (last lines):\n{tail}")
            raise
    finally:
        for process in processes.values():
            stop(process)


@contextmanager
def web_process(tmp_path: Path, **extra_env: str) -> Iterator[str]:
    """The Procfile's web process alone (gunicorn, fleet/gunicorn.conf.py) on
    the test database, at a free loopback port; yields its base URL. Like
    procfile_stack, it starts from the contract's settings and the
    harness's needs only, never the inherited environment."""
    port = free_port()
    env = {
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": "web-process-test-key",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ENV_FILE": "",
        "REGISTRY_RESOLVE_DIGESTS": "false",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "MIGRATE_ON_START": "false",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "WARNING",
    }
    assert set(env) <= CONTRACT_SETTINGS | WEB_ALONE_SETTINGS, set(env) - CONTRACT_SETTINGS - WEB_ALONE_SETTINGS
    env.update(extra_env)
    log = (tmp_path / "web.log").open("w")
    process = subprocess.Popen(
        procfile_commands()["web"],
        shell=True,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base_url}/healthz", [process])
        yield base_url
    finally:
        stop(process)


def checkout_copy(destination: Path) -> Path:
    """The tracked files of this checkout (with the working tree's changes)
    in `destination`, sharing this .venv: bin/run writes .env and var/ into
    the copy, never into the developer's checkout."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    (destination / ".venv").symlink_to(ROOT / ".venv")
    return destination


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT at its default, as in a terminal: a test run started in the
    background (`pytest &`) ignores it, the child inherits that, and a shell
    can never trap a signal ignored when it started, so bin/run would not
    hear the Ctrl-C the tests send it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def bin_run(checkout: Path, log_path: Path, **extra_env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """bin/run with its embedded defaults (no DATABASE_URL, no REDIS_URL):
    yields the base URL once it printed that it runs, and the process."""
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ENV_FILE", "CELERY_TASK_ALWAYS_EAGER"}
    }
    env.update({"PORT": str(port), "ROLLOUT_TICK_SECONDS": "1", **extra_env})
    log = log_path.open("w")
    process = subprocess.Popen(
        ["bin/run"], cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 120
        while "is running" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bin/run did not start:\n{log_path.read_text()}")
            time.sleep(0.3)
        try:
            yield f"http://127.0.0.1:{port}", process
        except BaseException as exc:
            # What bin/run and its processes said is what explains a failure.
            exc.add_note(f"bin/run's output (last lines):\n{log_path.read_text()[-6000:]}")
            raise
    finally:
        stop(process, seconds=60)
