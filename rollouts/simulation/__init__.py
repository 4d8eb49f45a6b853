"""The fleet simulator: a fleet, a policy and a push, driven through the real
engine in-process on a virtual clock (`manage.py simulate_rollout`).

Devices are not objects that get asked every tick. Each one, when its
target changes, draws its future once (pull delay, outcome) from the
agent's `Behaviour` timeline, and the moments it would report go on a heap.
Each tick applies the reports that came due, grouped by what they say (one
UPDATE per group, not per device), then runs the engine on the rollout as the
beat would, then reads which targets the engine changed. Every random draw
comes from one `random.Random(seed)` in a fixed order, so a seed always
gives the same run.

The whole run is one transaction. Other processes never see the simulated
fleet, so a real beat cannot advance its rollout on the real clock, and
without `keep` it is rolled back instead of deleted. The engine is run on
this rollout only: `rollouts_advance_all` would move every other active
rollout of the database onto the virtual clock.
"""

from .config import (
    PULL_DISTRIBUTIONS,
    Progress,
    SimulationConfig,
    SimulationError,
    SimulationResult,
)
from .runner import FleetSimulation

__all__ = [
    "PULL_DISTRIBUTIONS",
    "FleetSimulation",
    "Progress",
    "SimulationConfig",
    "SimulationError",
    "SimulationResult",
]
