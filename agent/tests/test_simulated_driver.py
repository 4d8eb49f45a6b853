"""SimulatedDevice: the pure behaviour model the agent and the fleet simulator share."""

from datetime import datetime, timedelta, timezone

import pytest

from agent.drivers.simulated import Behaviour, BehaviourRules, SimulatedDevice, SimulatedDriver
from agent.model import ServiceTarget

V1 = ServiceTarget(image="docker.io/iotistic/myapp", tag="v1.0.0", digest="sha256:" + "1" * 64)
V2 = ServiceTarget(image="docker.io/iotistic/myapp", tag="v2.0.0", digest="sha256:" + "2" * 64)
DB = ServiceTarget(image="docker.io/library/postgres", tag="16")


def timeline(device: SimulatedDevice, *moments: float) -> list[tuple[str, str]]:
    return [(s["web"].status, s["web"].health) for s in map(device.state, moments)]


def test_it_downloads_installs_starts_and_turns_healthy_on_its_schedule():
    device = SimulatedDevice(
        BehaviourRules(default=Behaviour(pull_seconds=10, start_seconds=5, health_seconds=20))
    )
    device.apply({"web": V2}, now=100.0)

    assert timeline(device, 100, 109.9, 110, 115, 134.9, 135, 10_000) == [
        ("downloading", "starting"),
        ("downloading", "starting"),
        ("installing", "starting"),
        ("running", "starting"),
        ("running", "starting"),
        ("running", "healthy"),
        ("running", "healthy"),
    ]
    assert device.state(135)["web"].digest == V2.digest


def test_it_applies_instantly_by_default():
    device = SimulatedDevice()
    device.apply({"web": V2}, now=0.0)

    assert timeline(device, 0) == [("running", "healthy")]


@pytest.mark.parametrize(
    ("outcome", "final"),
    [
        ("unhealthy", ("running", "unhealthy")),
        ("crashed", ("exited", "none")),
        ("no_healthcheck", ("running", "none")),
        ("pull_failed", ("failed", "none")),
    ],
)
def test_it_ends_each_outcome_in_its_state(outcome, final):
    device = SimulatedDevice(BehaviourRules(default=Behaviour(pull_seconds=1, outcome=outcome)))
    device.apply({"web": V2}, now=0.0)

    assert timeline(device, 0, 50) == [("downloading", "starting"), final]


def test_it_picks_the_behaviour_by_image_and_tag_glob():
    rules = BehaviourRules(rules=(("docker.io/iotistic/*:v2.*", Behaviour(outcome="crashed")),))
    device = SimulatedDevice(rules)
    device.apply({"web": V2, "db": DB}, now=0.0)

    state = device.state(1.0)
    assert (state["web"].status, state["db"].status) == ("exited", "running")


def test_it_keeps_a_timeline_running_when_only_another_service_changes():
    device = SimulatedDevice(BehaviourRules(default=Behaviour(pull_seconds=10)))
    device.apply({"web": V2}, now=0.0)
    relabelled = ServiceTarget(V2.image, V2.tag, V2.digest, rollout_id="r-2")

    device.apply({"web": relabelled, "db": DB}, now=8.0)

    state = device.state(10.0)
    assert state["web"].status == "running"
    assert state["db"].status == "downloading"


def test_it_stays_silent_for_a_release_that_never_reports():
    rules = BehaviourRules(rules=(("*:v2.0.0", Behaviour(reports=False)),))
    device = SimulatedDevice(rules)
    device.apply({"web": V1}, now=0.0)
    assert device.report(1.0)["web"].tag == "v1.0.0"

    device.apply({"web": V2}, now=2.0)

    assert device.report(3.0) is None
    assert device.state(3.0)["web"].tag == "v2.0.0"


def test_it_adopts_a_target_as_already_settled():
    device = SimulatedDevice(BehaviourRules(default=Behaviour(pull_seconds=60, health_seconds=60)))
    device.adopt({"web": V2})

    assert timeline(device, 0) == [("running", "healthy")]


def test_it_runs_on_a_datetime_clock_as_well():
    device = SimulatedDevice(BehaviourRules(default=Behaviour(pull_seconds=30)))
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    device.apply({"web": V2}, now=start)

    assert timeline(device, start + timedelta(seconds=29), start + timedelta(seconds=30)) == [
        ("downloading", "starting"),
        ("running", "healthy"),
    ]


def test_it_reads_the_agents_clock_through_the_driver(clock):
    driver = SimulatedDriver(
        SimulatedDevice(BehaviourRules(default=Behaviour(pull_seconds=5))), clock=clock
    )
    driver.apply({"web": V2})
    assert driver.observe()["web"].status == "downloading"

    clock.sleep(5)

    assert driver.observe()["web"].status == "running"


def test_it_rejects_an_unknown_outcome():
    with pytest.raises(ValueError, match="outcome"):
        Behaviour(outcome="exploded")
