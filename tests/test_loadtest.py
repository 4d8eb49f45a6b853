"""bench/loadtest.py: virtual agents against the real server (live_server, loopback)."""

import asyncio
from dataclasses import replace

import pytest

from bench.loadtest import LoadConfig, LoadResult, NotLoopback, main, run_load
from bench.loadtest.devices import create_devices, delete_devices
from devices.models import Device, DeviceService


def run(live_server, identities, **options) -> LoadResult:
    options.setdefault("duration", 10.0)
    config = LoadConfig(base_url=live_server.url, **options)
    return asyncio.run(run_load(config, identities))


def test_it_sees_a_200_then_304s_with_the_etag_and_only_200s_without(live_server):
    _, agents = create_devices(3)
    with_etag = run(live_server, agents, requests=12, poll_interval=0.0)
    assert with_etag.counts == {"poll 200": 3, "poll 304": 9}
    assert not with_etag.errors
    without = run(live_server, agents, requests=6, poll_interval=0.0, use_etag=False)
    assert without.counts == {"poll 200": 6}
    assert not without.errors


def test_it_alternates_polls_and_reports_and_the_server_stores_the_reports(live_server):
    _, agents = create_devices(2)
    result = run(live_server, agents, requests=8, poll_interval=0.0, report_interval=0.0)
    assert result.counts == {"poll 200": 2, "poll 304": 2, "report 200": 4}
    assert not result.errors
    services = DeviceService.objects.filter(device__uuid__in=[a.uuid for a in agents])
    assert sorted(services.values_list("reported_tag", "reported_status", "reported_health")) == [
        ("v1.0.0", "running", "healthy")
    ] * 2
    assert set(Device.objects.values_list("reported_target_version", flat=True)) == {1}


def test_it_counts_a_refused_key_as_an_error(live_server):
    _, agents = create_devices(1)
    stranger = replace(agents[0], api_key="not-a-key")
    result = run(live_server, [stranger], requests=3, poll_interval=0.0)
    assert result.counts == {}
    assert result.errors == {"poll HTTP 401": 3}


def test_it_stops_at_the_duration_with_budget_left(live_server):
    _, agents = create_devices(1)
    result = run(live_server, agents, requests=1000, duration=0.5, poll_interval=0.2)
    assert 1 <= result.total <= 4
    assert not result.errors


def test_it_deletes_the_devices_it_created(db):
    fleet, _ = create_devices(3)
    delete_devices(fleet)
    assert not Device.objects.exists()


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:8000", "http://192.168.1.2", "https://example.com", "http://0.0.0.0:80"],
)
def test_it_refuses_a_target_off_this_machine(url):
    with pytest.raises(NotLoopback):
        LoadConfig(base_url=url, requests=1, duration=1.0)


def test_its_command_exits_with_2_for_a_target_off_this_machine(capsys):
    assert main(["--url", "http://172.16.0.1:8000"]) == 2
    assert "only targets loopback" in capsys.readouterr().err
