"""Reference device agent for the fleet rollout control plane.

Standard library plus httpx only, so it runs on a device. See README.md.
"""

__version__ = "0.1.0"

from .client import AgentClient  # noqa: E402
from .drivers.compose import ComposeDriver  # noqa: E402
from .drivers.simulated import (  # noqa: E402
    Behaviour,
    BehaviourRules,
    SimulatedDevice,
    SimulatedDriver,
)
from .loop import Agent, Backoff  # noqa: E402
from .model import ServiceState, ServiceTarget, Target  # noqa: E402
from .state import AgentState, load_state, save_state  # noqa: E402

__all__ = [
    "Agent",
    "AgentClient",
    "AgentState",
    "Backoff",
    "Behaviour",
    "BehaviourRules",
    "ComposeDriver",
    "ServiceState",
    "ServiceTarget",
    "SimulatedDevice",
    "SimulatedDriver",
    "Target",
    "load_state",
    "save_state",
]
