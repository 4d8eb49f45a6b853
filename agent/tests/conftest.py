import random

import pytest

from agent.client import AgentClient
from agent.drivers.simulated import BehaviourRules, SimulatedDevice, SimulatedDriver
from agent.loop import Agent


class FakeClock:
    """Monotonic seconds that move only when the agent sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def _presence_written_in_the_poll(settings):
    # As in tests/conftest.py: the live server writes last_seen_at in the
    # poll. Buffered, the polls of a test would outlive it, and the
    # process's presence thread would write them during later tests (where
    # pytest-django refuses database access, logged as "Database access not
    # allowed", also at the end of the run) or into another test's rows.
    settings.DEVICE_PRESENCE_FLUSH_SECONDS = 0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_agent(tmp_path, clock):
    """An agent on the simulated driver and the fake clock; closes its client."""
    clients = []

    def make(server: str, *, behaviour: BehaviourRules | None = None, **kwargs) -> Agent:
        client = AgentClient(server, transport=kwargs.pop("transport", None))
        clients.append(client)
        kwargs.setdefault("state_file", tmp_path / "agent-state.json")
        return Agent(
            client=client,
            driver=SimulatedDriver(SimulatedDevice(behaviour), clock=clock),
            sleep=clock.sleep,
            rng=random.Random(7),
            **kwargs,
        )

    yield make
    for client in clients:
        client.close()
