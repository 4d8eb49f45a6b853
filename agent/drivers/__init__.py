"""How the agent makes a device run its target.

A driver is told the whole target (every service the server names) and asked
what runs. `apply` may block until the change is made (compose) or only start
it (simulated); `observe` is called after every poll.
"""

from collections.abc import Mapping
from typing import Protocol

from ..model import ServiceState, ServiceTarget


class DriverError(Exception):
    """The driver could not apply a target or could not see what runs."""


class Driver(Protocol):
    def apply(self, services: Mapping[str, ServiceTarget]) -> None:
        """Make the device run `services`; raise DriverError when it cannot."""

    def adopt(self, services: Mapping[str, ServiceTarget]) -> None:
        """Take over a target applied before the agent restarted, without redoing it."""

    def observe(self) -> dict[str, ServiceState] | None:
        """What each targeted service runs now; None when there is nothing to report."""
