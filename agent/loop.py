"""The agent's loop: register once, then poll, apply, report, sleep.

`Agent.step()` does one round and returns how long to sleep; `Agent.run()`
repeats it. Time enters only through the injected `sleep` (and the driver's
clock), and randomness through `rng`, so tests run the loop without waiting.
"""

import logging
import random
import time
import uuid as uuid_lib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .client import AgentClient, ClientError, Conflict, NotFound, Unauthorized
from .drivers import Driver, DriverError
from .model import ServiceState, Target
from .state import AgentState, StateFileError, load_state, save_state

logger = logging.getLogger("agent")

DEFAULT_POLL_INTERVAL_SECONDS = 60.0
# While a service is still downloading, starting or waiting for its first
# health verdict, look again this soon: the rollout engine is waiting for it.
SETTLE_INTERVAL_SECONDS = 5.0
JITTER_FRACTION = 0.1


class AgentConfigError(Exception):
    """The agent cannot start: no identity and no way to get one."""


def jittered(seconds: float, rng: random.Random, fraction: float = JITTER_FRACTION) -> float:
    """`seconds` +- `fraction`, so a fleet restarted at once does not poll in step."""
    return seconds * rng.uniform(1.0 - fraction, 1.0 + fraction)


@dataclass
class Backoff:
    """Exponential backoff: base, 2*base, 4*base, ... never above cap."""

    base: float = 1.0
    cap: float = 300.0
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        # The exponent is bounded so a device that failed for weeks cannot overflow.
        return min(self.cap, self.base * 2 ** min(self.failures - 1, 32))

    def reset(self) -> None:
        self.failures = 0


class Agent:
    def __init__(
        self,
        *,
        client: AgentClient,
        driver: Driver,
        state_file: Path,
        provisioning_key: str | None = None,
        uuid: str | None = None,
        name: str = "",
        tags: list[str] | tuple[str, ...] = (),
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        settle_interval: float = SETTLE_INTERVAL_SECONDS,
    ):
        self.client = client
        self.driver = driver
        self.state_file = Path(state_file)
        self._provisioning_key = provisioning_key
        self._wanted_uuid = uuid
        self._name = name
        self._tags = list(tags)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.backoff = backoff or Backoff()
        self._settle_interval = settle_interval
        self.state: AgentState | None = load_state(self.state_file)
        if self.state is None and not provisioning_key:
            raise AgentConfigError(
                f"No state file at {self.state_file} and no provisioning key to register with."
            )
        self.target: Target | None = None
        self._etag: str | None = None
        self._poll_interval = DEFAULT_POLL_INTERVAL_SECONDS
        self._last_report: dict[str, ServiceState] | None = None
        self._settled = True

    @property
    def uuid(self) -> str | None:
        return self.state.uuid if self.state else None

    def run(
        self, *, once: bool = False, should_stop: Callable[[], bool] = lambda: False
    ) -> bool:
        """Loop until `should_stop()`; with `once`, a single round.

        Returns whether the last round succeeded.
        """
        while True:
            delay, ok = self._step()
            if once or should_stop():
                return ok
            self._sleep(delay)
            if should_stop():
                return ok

    def step(self) -> float:
        """One round: register if needed, poll, apply, report. Seconds to sleep."""
        return self._step()[0]

    def _step(self) -> tuple[float, bool]:
        # OSError included: a state file that cannot be written (disk full,
        # read-only mount) is retried like any other failure, not a crash.
        try:
            state = self._ensure_registered()
            self._poll(state)
            self._converge()
            self._report()
        except (ClientError, DriverError, StateFileError, OSError) as exc:
            self._log_failure(exc)
            return self._failure_delay(exc), False
        self.backoff.reset()
        interval = self._poll_interval
        if not self._settled:
            interval = min(interval, self._settle_interval)
        return jittered(interval, self._rng), True

    def _ensure_registered(self) -> AgentState:
        if self.state is not None and self.state.registered:
            return self.state
        if self.state is None:
            # The uuid is chosen and stored before the register call, so a
            # retry after a lost answer cannot create a second device (the
            # server answers 409 instead, which the logs explain).
            self.state = AgentState(uuid=self._wanted_uuid or str(uuid_lib.uuid4()))
            save_state(self.state_file, self.state)
        if not self._provisioning_key:
            raise AgentConfigError(
                f"The state file {self.state_file} holds no api key, and no provisioning key "
                "was given to register with."
            )
        registration = self.client.register(
            provisioning_key=self._provisioning_key,
            uuid=self.state.uuid,
            name=self._name,
            tags=self._tags,
        )
        self.state = AgentState(
            uuid=registration.uuid, api_key=registration.api_key, fleet=registration.fleet
        )
        save_state(self.state_file, self.state)
        logger.info("Registered as device %s in fleet %s.", registration.uuid, registration.fleet)
        return self.state

    def _poll(self, state: AgentState) -> None:
        result = self.client.poll(uuid=state.uuid, api_key=state.api_key, etag=self._etag)
        if result.target is None:
            return
        self._etag = result.etag
        if result.target.poll_interval_seconds:
            self._poll_interval = float(result.target.poll_interval_seconds)
        first = self.target is None
        self.target = result.target
        if first and result.target.version == state.applied_target_version:
            # Restarted: the device already runs this target; do not pull again.
            self.driver.adopt(result.target.services)
            logger.info("Resumed at target version %s.", result.target.version)

    def _converge(self) -> None:
        target = self.target
        if target is None or target.version == self.state.applied_target_version:
            return
        logger.info("Applying target version %s: %s.", target.version, _describe(target))
        try:
            self.driver.apply(target.services)
        except DriverError:
            # Report what the failure left behind before backing off; the
            # apply is retried next round since the version is not recorded.
            self._report()
            raise
        self.state = self.state.applied(version=target.version, services=target.services)
        save_state(self.state_file, self.state)

    def _report(self) -> None:
        services = self.driver.observe()
        if services is None:
            return
        self._settled = all(state.settled for state in services.values())
        if services == self._last_report:
            return
        self.client.report(
            uuid=self.state.uuid,
            api_key=self.state.api_key,
            target_version=self.target.version if self.target else None,
            services=services,
        )
        self._last_report = services
        logger.info("Reported %s.", _describe_states(services))

    def _failure_delay(self, exc: Exception) -> float:
        delay = jittered(self.backoff.next_delay(), self._rng)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            delay = max(delay, retry_after)
        return min(delay, self.backoff.cap)

    def _log_failure(self, exc: Exception) -> None:
        if isinstance(exc, Unauthorized) and self.state and self.state.registered:
            logger.critical(
                "The server refused the api key of device %s (%s). The agent does not "
                "register again by itself: restore the right state file %s, or delete it "
                "to register as a new device.",
                self.state.uuid,
                exc,
                self.state_file,
            )
        elif isinstance(exc, Unauthorized):
            logger.critical("The server refused the provisioning key: %s", exc)
        elif isinstance(exc, NotFound):
            logger.critical(
                "The server does not know device %s under this key (%s): was it deleted?",
                self.uuid,
                exc,
            )
        elif isinstance(exc, Conflict):
            logger.critical(
                "Device %s already exists but this agent has no key for it (%s). Delete the "
                "device on the server to let it register again.",
                self.uuid,
                exc,
            )
        else:
            logger.warning("Round failed, backing off: %s", exc)


def _describe(target: Target) -> str:
    return ", ".join(f"{n}={s.reference}" for n, s in sorted(target.services.items())) or "none"


def _describe_states(services: dict[str, ServiceState]) -> str:
    return (
        ", ".join(f"{n} {s.status}/{s.health}" for n, s in sorted(services.items()))
        or "no services"
    )
