"""The state file: identity and applied target, atomic, readable by its owner only."""

import json
import os
import stat

import pytest

from agent.client import AgentClient
from agent.drivers.simulated import SimulatedDriver
from agent.loop import Agent, AgentConfigError
from agent.model import ServiceTarget
from agent.state import AgentState, StateFileError, load_state, save_state

STATE = AgentState(
    uuid="5b0e4c1e-1111-4f4f-8888-000000000001",
    api_key="secret-device-key",
    fleet="lab",
    applied_target_version=42,
    applied_services={
        "web": ServiceTarget("docker.io/iotistic/myapp", "v2", "sha256:" + "a" * 64, "r-1")
    },
)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_it_round_trips_identity_and_applied_target(tmp_path):
    path = tmp_path / "state.json"
    save_state(path, STATE)

    assert load_state(path) == STATE


def test_it_is_readable_by_its_owner_only_even_over_a_world_readable_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{}")
    path.chmod(0o644)
    old_umask = os.umask(0)
    try:
        save_state(path, STATE)
    finally:
        os.umask(old_umask)

    assert mode_of(path) == 0o600


def test_it_keeps_the_old_file_when_a_write_fails_midway(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    save_state(path, STATE)
    before = path.read_bytes()

    def power_cut(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        save_state(path, AgentState(uuid="another"))

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_it_says_nothing_is_stored_when_there_is_no_file(tmp_path):
    assert load_state(tmp_path / "missing.json") is None


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 99, "uuid": "x"}), "[]"])
def test_it_refuses_to_start_on_a_corrupt_file_instead_of_registering_again(tmp_path, content):
    path = tmp_path / "state.json"
    path.write_text(content)

    with pytest.raises(StateFileError):
        Agent(
            client=AgentClient("http://127.0.0.1:1"),
            driver=SimulatedDriver(),
            state_file=path,
            provisioning_key="fleet-key",
        )
    assert path.read_text() == content


def test_it_needs_a_provisioning_key_when_it_has_no_identity(tmp_path):
    with pytest.raises(AgentConfigError, match="provisioning key"):
        Agent(
            client=AgentClient("http://127.0.0.1:1"),
            driver=SimulatedDriver(),
            state_file=tmp_path / "state.json",
        )
