"""Event streams beside device polls: what 50 open streams cost the poll 304
path, and how long an event takes from its commit to the clients.

    python -m bench.streams [--streams 50] [--rounds 3] [--seconds 8] [--events 30]

Starts web exactly as the Procfile does (gunicorn, fleet/gunicorn.conf.py,
2 gthread workers) on a free loopback port, against DATABASE_URL and
REDIS_URL of the environment (bench/run sets them), and stops it at the end.
Rounds alternate between no streams and N open streams, so both see the same
neighbours on a shared machine; wrk drives the 304 polls. Then, with N
streams open, it commits rollout events (pause, resume, ...) in this process
and takes, per stream and event, the time from the commit returning to the
message arriving. Writes its section into bench/RESULTS.md (between the
`streams` markers) and prints it.
"""

import argparse
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- streams:begin -->", "<!-- streams:end -->"
# The web's keep-alive period here; streams closed by the client are freed
# on the server's next write, so a new set waits this long plus a margin.
KEEPALIVE_SECONDS = 2


def main() -> None:
    options = _arguments()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django

    django.setup()
    from django.db import connections

    setup = _setup()
    connections.close_all()
    port = _free_port()
    web = _start_web(port)
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait_for(f"{base_url}/healthz", web)
        etag = _etag(base_url, setup)
        poll_url = f"{base_url}/api/v1/device/{setup['device_uuid']}/state"
        poll_headers = {"Authorization": f"Bearer {setup['device_key']}", "If-None-Match": etag}
        quiet, busy = [], []
        for _ in range(options.rounds):
            quiet.append(_wrk(poll_url, poll_headers, options.seconds))
            with _Streams(base_url, setup["token"], options.streams) as streams:
                busy.append(_wrk(poll_url, poll_headers, options.seconds))
                assert streams.all_open(), "a stream closed during the poll measurement"
        with _Streams(base_url, setup["token"], options.streams) as streams:
            latencies = _commit_to_event(streams, setup["rollout_id"], options.events)
    finally:
        _stop(web)
    section = _report(options, quiet, busy, latencies)
    _write_results(section)
    print(section)


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk run")
    parser.add_argument("--events", type=int, default=30, help="events committed for the latency")
    return parser.parse_args()


# --- setup -------------------------------------------------------------------


def _setup() -> dict:
    """One device to poll and one in-progress rollout to pause and resume,
    in a fleet of their own; a superuser token for the streams."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from devices.keys import hash_key, new_key
    from devices.models import Device, DeviceService
    from devices.services import fleet_create
    from rollouts.models import ImagePolicy, UpdateStrategy
    from rollouts.services import rollout_create_for_push, rollout_fan_out, rollout_start

    suffix = os.urandom(4).hex()
    image = f"docker.io/bench/streams-{suffix}"
    fleet, _ = fleet_create(slug=f"streams-{suffix}", name="Bench streams")
    key = new_key()
    device = Device.objects.create(fleet=fleet, name=f"streams-{suffix}", api_key_hash=hash_key(key))
    DeviceService.objects.create(device=device, name="web", target_image=image, target_tag="v1")
    ImagePolicy.objects.create(
        image_pattern=f"{image}:*", update_strategy=UpdateStrategy.MANUAL, batch_percentages=[100],
        health_check_timeout_seconds=86400,
    )
    rollout = rollout_create_for_push(image=image, tag="v2", digest=None).rollout
    rollout_fan_out(rollout_id=rollout.pk)
    rollout_start(rollout_id=rollout.pk, actor="bench")
    user, _ = User.objects.get_or_create(
        username="bench-streams", defaults={"is_superuser": True, "is_staff": True}
    )
    token, _ = Token.objects.get_or_create(user=user)
    return {
        "device_uuid": str(device.uuid), "device_key": key,
        "rollout_id": str(rollout.pk), "token": token.key,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_web(port: int) -> subprocess.Popen:
    web_command = next(
        line.split(":", 1)[1].strip()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    env = {
        **os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "2",
        "MIGRATE_ON_START": "false", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DJANGO_SETTINGS_MODULE": "fleet.settings",
        # A stream learns that its client left when it next writes: with the
        # default keep-alive (10 s) the previous round's 50 streams could
        # still hold their slots when the next round opens 50 more (503).
        "EVENT_STREAM_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS),
    }
    return subprocess.Popen(
        shlex.split(web_command), cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _wait_for(url: str, process: subprocess.Popen) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit("web exited before it answered")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _etag(base_url: str, setup: dict) -> str:
    request = urllib.request.Request(
        f"{base_url}/api/v1/device/{setup['device_uuid']}/state",
        headers={"Authorization": f"Bearer {setup['device_key']}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["ETag"]


# --- measurements ------------------------------------------------------------


def _wrk(url: str, headers: dict, seconds: int) -> float:
    """Requests per second of 304 polls (16 connections, 2 threads)."""
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    non_304 = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_304:
        raise SystemExit(f"wrk saw {non_304.group(1)} answers that were not 304:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


class _Streams:
    """N streams of /api/v1/events/stream, each read by a thread that notes
    when every event id arrived."""

    def __init__(self, base_url: str, token: str, count: int):
        self.url = f"{base_url}/api/v1/events/stream"
        self.headers = {"Authorization": f"Token {token}", "Accept": "text/event-stream"}
        self.count = count
        self.arrivals: list[dict[int, float]] = [{} for _ in range(count)]
        self.opened = threading.Barrier(count + 1)
        self.closing = False
        self.responses: list = []

    def __enter__(self):
        self.threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(self.count)]
        for thread in self.threads:
            thread.start()
        self.opened.wait(60)
        return self

    def _read(self, index: int):
        import httpx

        arrivals = self.arrivals[index]
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client:
            with client.stream("GET", self.url, headers=self.headers) as response:
                assert response.status_code == 200, response.status_code
                self.responses.append(response)
                self.opened.wait(60)
                try:
                    for line in response.iter_lines():
                        if line.startswith("id: "):
                            arrivals[int(line[4:])] = time.monotonic()
                except Exception:
                    if not self.closing:
                        raise

    def all_open(self) -> bool:
        return all(thread.is_alive() for thread in self.threads)

    def __exit__(self, *exc):
        self.closing = True
        for response in self.responses:
            response.close()
        for thread in self.threads:
            thread.join(5)
        time.sleep(KEEPALIVE_SECONDS + 1)


def _commit_to_event(streams: _Streams, rollout_id: str, events: int) -> list[float]:
    """Seconds from each committed event to its arrival, over every stream."""
    from django.db import connection

    from rollouts.models import RolloutEvent
    from rollouts.services import rollout_pause, rollout_resume

    committed: dict[int, float] = {}
    for number in range(events):
        action = rollout_pause if number % 2 == 0 else rollout_resume
        action(rollout_id=rollout_id, actor="bench")
        committed_at = time.monotonic()  # the service's transaction has committed
        newest = RolloutEvent.objects.filter(rollout_id=rollout_id).order_by("-id").values_list("id", flat=True)[0]
        committed[newest] = committed_at
        time.sleep(0.2)
    connection.close()
    time.sleep(3)
    latencies = []
    for arrivals in streams.arrivals:
        for event_id, at in committed.items():
            if event_id not in arrivals:
                raise SystemExit(f"event {event_id} never reached a stream")
            latencies.append(arrivals[event_id] - at)
    return latencies


# --- report ------------------------------------------------------------------


def _report(options, quiet: list[float], busy: list[float], latencies: list[float]) -> str:
    ratios = [b / q for q, b in zip(quiet, busy)]
    ordered = sorted(latencies)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    lines = [
        BEGIN,
        "## Event streams beside device polls",
        "",
        f"`python -m bench.streams` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: web as the",
        "Procfile runs it (gunicorn, 2 gthread workers, fleet/gunicorn.conf.py), PostgreSQL,",
        f"Redis wake-ups; wrk 2 threads x 16 connections, {options.seconds} s per run, rounds alternate.",
        "",
        "| round | poll 304, no stream (req/s) | poll 304, "
        f"{options.streams} open streams (req/s) | ratio |",
        "|---|---|---|---|",
        *(f"| {i + 1} | {q:.0f} | {b:.0f} | {r:.2f} |" for i, (q, b, r) in enumerate(zip(quiet, busy, ratios))),
        f"| median | {statistics.median(quiet):.0f} | {statistics.median(busy):.0f} | "
        f"**{statistics.median(ratios):.2f}** (goal >= 0.95) |",
        "",
        f"Commit to event received, {options.streams} streams x {options.events} events "
        f"({len(latencies)} deliveries): p50 **{percentile(0.5):.1f} ms**, "
        f"p99 **{percentile(0.99):.1f} ms**, max {ordered[-1] * 1000:.1f} ms (contract: 2 s).",
        END,
    ]
    return "\n".join(lines)


def _write_results(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
