"""bench/wrk.py and bench/agents.lua: wrk as the benchmarks' load generator,
against the real server (live_server, loopback)."""

import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.loadtest.devices import create_devices
from bench.wrk import Device, DeviceFile, run_wrk
from devices.models import Device as DeviceRow
from devices.models import DeviceService
from devices.views import state_etag

STATE_PATH = "/api/v1/device/{uuid}/state"


@pytest.fixture
def devices(transactional_db):
    _, agents = create_devices(3)
    return [Device(agent.uuid, agent.api_key, state_etag(1)) for agent in agents]


def wrk(live_server, devices, mode):
    file = DeviceFile(devices)
    try:
        return run_wrk(
            live_server.url, file, mode=mode, path=STATE_PATH, seconds=1, connections=2, seed=1
        )
    finally:
        file.remove()


def test_every_device_polls_with_its_own_key_and_etag(live_server, devices):
    result = wrk(live_server, devices, "poll304")
    assert result.requests > 0
    assert result.statuses == {304: result.requests}
    assert result.unexpected(304) == 0
    assert result.p50_ms <= result.p99_ms


def test_without_the_etag_every_poll_is_a_200(live_server, devices):
    result = wrk(live_server, devices, "poll200")
    assert result.statuses == {200: result.requests}


def test_reports_reach_every_device(live_server, devices):
    result = wrk(live_server, devices, "report")
    assert result.statuses == {200: result.requests}
    assert set(DeviceRow.objects.values_list("reported_target_version", flat=True)) == {1}
    assert DeviceService.objects.filter(reported_status="running").count() == 3


def test_refused_answers_count_as_unexpected(live_server, devices):
    strangers = [replace(device, key="not-a-key") for device in devices]
    result = wrk(live_server, strangers, "poll304")
    assert result.statuses == {401: result.requests}
    # Socket errors (a server closing after a refusal) count as well.
    assert result.unexpected(304) >= result.requests > 0


class _CountingHandler(BaseHTTPRequestHandler):
    """Answers every request 304 on a keep-alive connection (unless the client
    asks to close) and counts the connections it was handed."""

    protocol_version = "HTTP/1.1"
    connections = 0
    lock = threading.Lock()

    def setup(self):
        super().setup()
        with self.lock:
            type(self).connections += 1

    def do_GET(self):
        self.send_response(304)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def counting_server():
    _CountingHandler.connections = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("close_every", [0, 10])
def test_connections_are_renewed_every_close_every_requests(counting_server, close_every):
    devices = [Device(f"device-{n}", f"key-{n}", '"1.30"') for n in range(5)]
    file = DeviceFile(devices)
    try:
        result = run_wrk(
            counting_server, file, mode="poll304", path=STATE_PATH, seconds=1,
            connections=2, seed=1, close_every=close_every,
        )
    finally:
        file.remove()
    assert result.requests > 50
    if close_every == 0:
        # Its two, and the one wrk opens before the run to try the address.
        assert _CountingHandler.connections <= 3
    else:
        # One new connection for each request that asked to close its own.
        assert _CountingHandler.connections >= result.requests // close_every
