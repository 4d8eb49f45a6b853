"""A device that runs nothing: it plays a timeline chosen per image and tag.

`SimulatedDevice` is pure: given a target and a moment it says what the
device would report, without HTTP, threads or real time. The agent wraps it
in `SimulatedDriver` with its clock; the fleet simulator can drive thousands
of them in-process with a virtual clock (`now` may be seconds as a float or
a datetime, as long as one device always gets the same kind).

The timeline of a service after its target changes, in seconds from `apply`:

    [0, pull)                    downloading / starting
    [pull, pull+start)           installing / starting
    [pull+start, +health)        running / starting
    then, by outcome:            healthy    -> running / healthy
                                 unhealthy  -> running / unhealthy
                                 crashed    -> exited / none
                                 no_healthcheck -> running / none (from pull+start on)
                                 pull_failed    -> failed / none (from pull on)
"""

import fnmatch
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..model import ServiceState, ServiceTarget

OUTCOMES = ("healthy", "unhealthy", "crashed", "no_healthcheck", "pull_failed")

Instant = float | datetime


@dataclass(frozen=True)
class Behaviour:
    """How one service behaves once told to run one release."""

    pull_seconds: float = 0.0
    start_seconds: float = 0.0
    # How long health stays `starting` before the outcome shows (or the crash).
    health_seconds: float = 0.0
    outcome: str = "healthy"
    # False: the device takes the release and then never reports again.
    reports: bool = True

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {OUTCOMES}.")
        if min(self.pull_seconds, self.start_seconds, self.health_seconds) < 0:
            raise ValueError("Durations of a behaviour cannot be negative.")

    def at(self, elapsed: float) -> tuple[str, str]:
        """(status, health) `elapsed` seconds after the target was applied."""
        if elapsed < self.pull_seconds:
            return "downloading", "starting"
        if self.outcome == "pull_failed":
            return "failed", "none"
        if elapsed < self.pull_seconds + self.start_seconds:
            return "installing", "starting"
        if self.outcome == "no_healthcheck":
            return "running", "none"
        if elapsed < self.pull_seconds + self.start_seconds + self.health_seconds:
            return "running", "starting"
        return {
            "healthy": ("running", "healthy"),
            "unhealthy": ("running", "unhealthy"),
            "crashed": ("exited", "none"),
        }[self.outcome]


BehaviourModel = Callable[[str, ServiceTarget], Behaviour]


@dataclass(frozen=True)
class BehaviourRules:
    """A `BehaviourModel` from glob rules over `image:tag`; first match wins.

    `BehaviourRules(rules=(("*:v2-bad", Behaviour(outcome="unhealthy")),))`
    makes every release tagged `v2-bad` go unhealthy and all others healthy.
    """

    default: Behaviour = Behaviour()
    rules: tuple[tuple[str, Behaviour], ...] = ()

    def __call__(self, service: str, target: ServiceTarget) -> Behaviour:
        name = f"{target.image}:{target.tag or ''}"
        for pattern, behaviour in self.rules:
            if fnmatch.fnmatchcase(name, pattern):
                return behaviour
        return self.default


@dataclass(frozen=True)
class _Running:
    target: ServiceTarget
    behaviour: Behaviour
    # None: applied before the agent (re)started, so its timeline is over.
    since: Instant | None


class SimulatedDevice:
    def __init__(self, behaviour: BehaviourModel | None = None):
        self._behaviour = behaviour or BehaviourRules()
        self._services: dict[str, _Running] = {}

    @property
    def targets(self) -> dict[str, ServiceTarget]:
        return {name: running.target for name, running in self._services.items()}

    def apply(self, services: Mapping[str, ServiceTarget], now: Instant) -> None:
        """Start the timeline of every service whose target changed."""
        self._take(services, since=now)

    def adopt(self, services: Mapping[str, ServiceTarget]) -> None:
        """Run `services` as if their timelines ended long ago."""
        self._take(services, since=None)

    def state(self, now: Instant) -> dict[str, ServiceState]:
        states = {}
        for name, running in self._services.items():
            status, health = running.behaviour.at(_elapsed(running.since, now))
            states[name] = ServiceState.of(running.target, status=status, health=health)
        return states

    def report(self, now: Instant) -> dict[str, ServiceState] | None:
        """What the device would send to the server now; None if it stays silent."""
        if any(not running.behaviour.reports for running in self._services.values()):
            return None
        return self.state(now)

    def _take(self, services: Mapping[str, ServiceTarget], *, since: Instant | None) -> None:
        taken = {}
        for name, target in services.items():
            current = self._services.get(name)
            if current is not None and current.target.release == target.release:
                taken[name] = _Running(target, current.behaviour, current.since)
            else:
                taken[name] = _Running(target, self._behaviour(name, target), since)
        self._services = taken


def _elapsed(since: Instant | None, now: Instant) -> float:
    if since is None:
        return math.inf
    delta = now - since
    return delta.total_seconds() if isinstance(delta, timedelta) else float(delta)


class SimulatedDriver:
    """The `Driver` face of a `SimulatedDevice`, on the agent's clock."""

    def __init__(
        self,
        device: SimulatedDevice | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.device = device or SimulatedDevice()
        self._clock = clock

    def apply(self, services: Mapping[str, ServiceTarget]) -> None:
        self.device.apply(services, self._clock())

    def adopt(self, services: Mapping[str, ServiceTarget]) -> None:
        self.device.adopt(services)

    def observe(self) -> dict[str, ServiceState] | None:
        return self.device.report(self._clock())
