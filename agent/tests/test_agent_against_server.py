"""The agent against the real server (live_server, PostgreSQL): issue 5's acceptance.

It registers with a provisioning key, polls (304 once it has the target),
applies a new target through the simulated driver and reports healthy; killed
and restarted from its state file, it keeps its identity.
"""

import logging

import pytest

from agent.__main__ import main
from agent.drivers.simulated import Behaviour, BehaviourRules
from agent.state import load_state
from devices import presence
from devices.models import Device, DeviceService
from devices.services import ServiceTarget, device_set_targets
from tests.factories import FleetFactory

pytestmark = pytest.mark.django_db(transaction=True)

DIGEST = "sha256:" + "9f86d081" * 8
# Pulling takes 20 s, starting 10 s, the health check 30 s more.
SLOW_RELEASE = BehaviourRules(
    default=Behaviour(pull_seconds=20, start_seconds=10, health_seconds=30)
)


def deploy_web(device: Device) -> None:
    device_set_targets(
        device_id=device.id,
        targets={
            "web": ServiceTarget(image="docker.io/iotistic/myapp", tag="v2.0.1", digest=DIGEST)
        },
    )


def reported(device: Device) -> tuple:
    row = DeviceService.objects.filter(device=device, name="web").first()
    return (row.reported_status, row.reported_health) if row and row.reported_at else None


def test_it_registers_polls_applies_a_target_and_keeps_its_identity(
    live_server, make_agent, clock
):
    fleet = FleetFactory()
    agent = make_agent(
        live_server.url, provisioning_key=fleet.provisioning_key, behaviour=SLOW_RELEASE
    )

    first_delay = agent.step()
    agent.step()
    agent.step()

    device = Device.objects.get(fleet=fleet)
    assert str(device.uuid) == agent.uuid
    # Registered once, one 200, then only 304s; the empty first report goes out once.
    assert list(agent.client.history) == [
        ("POST", 201),
        ("GET", 200),
        ("PATCH", 200),
        ("GET", 304),
        ("GET", 304),
    ]
    assert 54 <= first_delay <= 66  # the server's 60 s, +-10 %

    deploy_web(device)
    progress = []
    for _ in range(40):
        clock.sleep(agent.step())
        if not progress or progress[-1] != reported(device):
            progress.append(reported(device))
        if progress[-1] == ("running", "healthy"):
            break

    assert progress == [
        ("downloading", "starting"),
        ("installing", "starting"),
        ("running", "starting"),
        ("running", "healthy"),
    ]
    row = DeviceService.objects.get(device=device, name="web")
    assert (row.reported_image, row.reported_tag, row.reported_digest) == (
        "docker.io/iotistic/myapp",
        "v2.0.1",
        DIGEST,
    )
    device.refresh_from_db()
    assert device.reported_target_version == device.target_version == 2
    assert load_state(agent.state_file).applied_target_version == 2

    # Killed: the object and its connections are gone; only the state file stays.
    uuid = agent.uuid
    agent.client.close()
    del agent
    restarted = make_agent(
        live_server.url, provisioning_key=fleet.provisioning_key, behaviour=SLOW_RELEASE
    )
    restarted.step()

    assert restarted.uuid == uuid
    assert list(restarted.client.history) == [("GET", 200), ("PATCH", 200)]
    assert Device.objects.filter(fleet=fleet).count() == 1
    # It took over the running release instead of pulling it again.
    assert reported(device) == ("running", "healthy")


def test_its_polls_leave_no_presence_buffered_beyond_the_test(live_server, make_agent, clock):
    fleet = FleetFactory()
    agent = make_agent(live_server.url, provisioning_key=fleet.provisioning_key)
    agent.step()
    agent.step()
    # Written in the poll: nothing left for the presence thread to write
    # once the test (and its database) is gone.
    assert Device.objects.get(fleet=fleet).last_seen_at is not None
    assert presence.buffer.pending() == {}


def test_it_reports_an_unhealthy_release_as_unhealthy(live_server, make_agent, clock):
    fleet = FleetFactory()
    bad = BehaviourRules(rules=(("*:v2.*", Behaviour(health_seconds=10, outcome="unhealthy")),))
    agent = make_agent(live_server.url, provisioning_key=fleet.provisioning_key, behaviour=bad)
    agent.step()
    device = Device.objects.get(fleet=fleet)

    deploy_web(device)
    for _ in range(5):
        clock.sleep(agent.step())

    assert reported(device) == ("running", "unhealthy")


def test_it_backs_off_loudly_and_does_not_register_again_when_its_key_is_refused(
    live_server, make_agent, caplog
):
    fleet = FleetFactory()
    agent = make_agent(live_server.url, provisioning_key=fleet.provisioning_key)
    agent.step()
    Device.objects.filter(fleet=fleet).delete()

    with caplog.at_level(logging.WARNING, logger="agent"):
        delays = [agent.step(), agent.step(), agent.step()]

    assert list(agent.client.history)[-3:] == [("GET", 401)] * 3
    assert [("POST", 201)] == [h for h in agent.client.history if h[0] == "POST"]
    assert not Device.objects.filter(fleet=fleet).exists()
    assert 0.9 <= delays[0] <= 1.1 and 1.8 <= delays[1] <= 2.2 and 3.6 <= delays[2] <= 4.4
    assert any(
        r.levelno == logging.CRITICAL and "refused the api key" in r.message
        for r in caplog.records
    )



def test_it_runs_from_the_command_line_and_registers_only_once(live_server, tmp_path):
    fleet = FleetFactory()
    state_file = tmp_path / "state.json"
    args = ["--server", live_server.url, "--state-file", str(state_file), "--driver", "simulated"]

    key = fleet.provisioning_key
    first = main([*args, "--provisioning-key", key, "--name", "pi-1", "--tag", "lab", "--once"])
    second = main([*args, "--once"])

    assert (first, second) == (0, 0)
    device = Device.objects.get(fleet=fleet)
    assert str(device.uuid) == load_state(state_file).uuid
    assert device.name == "pi-1"
    assert [t.name for t in device.tag_set.all()] == ["lab"]
    assert device.last_report_at is not None


def test_it_takes_part_in_a_real_rollout_until_the_engine_judges_it_healthy(
    live_server, make_agent, clock
):
    from rollouts.models import ImagePolicy, RolloutDevice
    from rollouts.services import rollout_create_for_push, rollout_fan_out, rollouts_advance_all

    fleet = FleetFactory()
    agent = make_agent(live_server.url, provisioning_key=fleet.provisioning_key)
    agent.step()
    device = Device.objects.get(fleet=fleet)
    device_set_targets(
        device_id=device.id,
        targets={"web": ServiceTarget(image="docker.io/iotistic/myapp", tag="v1.0.0")},
    )
    for _ in range(10):
        clock.sleep(agent.step())
    ImagePolicy.objects.create(image_pattern="docker.io/iotistic/*:*", update_strategy="auto")

    outcome = rollout_create_for_push(image="docker.io/iotistic/myapp", tag="v2.0.1", digest=DIGEST)
    rollout_fan_out(rollout_id=outcome.rollout.pk)
    for _ in range(10):
        clock.sleep(agent.step())
    rollouts_advance_all()

    row = RolloutDevice.objects.get(rollout=outcome.rollout, device=device)
    assert (row.status, row.new_tag) == ("healthy", "v2.0.1")
    outcome.rollout.refresh_from_db()
    assert outcome.rollout.status == "completed"
    assert reported(device) == ("running", "healthy")
