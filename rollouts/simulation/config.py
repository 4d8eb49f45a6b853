"""What a simulation run takes (SimulationConfig), reports while it runs
(Progress) and shows at the end (SimulationResult)."""

import math
from dataclasses import asdict, dataclass, field

from rest_framework.exceptions import ValidationError

from ..models import DEFAULT_RAMP_FACTOR, DEFAULT_RAMP_INITIAL, MAX_RETRIES, UpdateStrategy
from ..serializers import validate_batch_percentages

PULL_DISTRIBUTIONS = ("exponential", "uniform")


class SimulationError(ValueError):
    """A setting the simulator cannot run with; the message says which."""


@dataclass(frozen=True)
class SimulationConfig:
    devices: int = 1000
    seed: int = 1
    # Chance that a device fails on the new release; a failure is a crash
    # (`exited`) with probability `crash_share`, otherwise `unhealthy`.
    bad_rate: float = 0.0
    crash_share: float = 0.5
    # Chance that a device polls its target but never reports (it times out).
    never_report_rate: float = 0.0
    # Chance that a device never polls at all while the rollout runs (it is
    # offline: deferred).
    offline_rate: float = 0.0
    # Chance that a device fails its first attempt (crash), then is healthy.
    flaky_rate: float = 0.0
    pull_delay_mean: float = 30.0
    pull_delay_distribution: str = "exponential"
    # How long health stays `starting` after the pull before the outcome shows.
    health_delay: float = 20.0
    tick_seconds: float = 15.0
    max_hours: float = 24.0
    strategy: str = UpdateStrategy.STAGED
    batch_percentages: tuple[int, ...] = (10, 50, 100)
    batch_delay_minutes: float = 30.0
    max_failure_rate: float = 0.2
    min_failure_samples: int = 5
    health_check_timeout_seconds: int = 300
    auto_rollback: bool = True
    health_check: bool = True
    # A fresh policy's release safety settings.
    ramp_initial: int | None = DEFAULT_RAMP_INITIAL
    ramp_factor: float = DEFAULT_RAMP_FACTOR
    max_retries: int = 0
    # End the run, the rollout still in progress, once this batch has all
    # its verdicts (None: run to the end). The scenarios use it for the many
    # seeds of the flaky-devices row.
    stop_after_batch: int | None = None

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise SimulationError(f"{_label(name).capitalize()} must be a finite number.")
        problems = [
            (self.devices < 1, "devices must be at least 1"),
            (self.tick_seconds <= 0, "tick seconds must be positive"),
            (self.max_hours <= 0, "max hours must be positive"),
            (self.pull_delay_mean < 0, "the pull delay mean cannot be negative"),
            (self.health_delay < 0, "the health delay cannot be negative"),
            (self.batch_delay_minutes < 0, "the batch delay cannot be negative"),
            (self.health_check_timeout_seconds < 1, "the health timeout must be positive"),
            (self.min_failure_samples < 1, "min failure samples must be at least 1"),
            (self.ramp_initial is not None and self.ramp_initial < 1, "ramp initial must be at least 1"),
            (not self.ramp_factor > 1, "the ramp factor must be greater than 1"),
            (
                self.stop_after_batch is not None and self.stop_after_batch < 1,
                "stop after batch must be at least 1",
            ),
            (not 0 <= self.max_retries <= MAX_RETRIES, f"max retries must be within 0..{MAX_RETRIES}"),
            (
                self.pull_delay_distribution not in PULL_DISTRIBUTIONS,
                f"the pull delay distribution must be one of {', '.join(PULL_DISTRIBUTIONS)}",
            ),
            (
                self.strategy not in UpdateStrategy.values,
                f"the strategy must be one of {', '.join(UpdateStrategy.values)}",
            ),
        ]
        rates = ("bad_rate", "crash_share", "never_report_rate", "offline_rate", "flaky_rate")
        for name in (*rates, "max_failure_rate"):
            outside = not 0 <= getattr(self, name) <= 1
            problems.append((outside, f"{_label(name)} must be within 0..1"))
        for broken, message in problems:
            if broken:
                raise SimulationError(message[0].upper() + message[1:] + ".")
        try:
            validate_batch_percentages(list(self.batch_percentages))
        except ValidationError as error:
            raise SimulationError(f"Batches: {' '.join(map(str, error.detail))}") from None


def _label(name: str) -> str:
    return name.replace("_", " ")


@dataclass(frozen=True)
class Progress:
    """What the simulator knows after one tick, for a progress display."""

    seconds: float
    status: str
    current_batch: int
    total_batches: int
    targeted: int
    devices: int


@dataclass
class SimulationResult:
    """What a run showed. Device counts come from the rollout's rows, except
    what only the devices know (what they ran, what they run now)."""

    devices: int
    silent_devices: int
    offline_devices: int
    status: str
    status_reason: str
    batches_reached: int
    total_batches: int
    # Told to run the new image (their target changed), whether or not they got to.
    devices_targeted: int
    # Reported the new image at least once.
    devices_ran_new_image: int
    devices_failed: int
    failures: dict[str, int]
    devices_rolled_back: int
    devices_back_on_old_image: int
    # Blast radius, the most devices at any tick that reported running the
    # new image while it is a bad one (bad_rate > 0; 0 for a good release)...
    max_on_failing_release: int
    # ... and of those, the most that were visibly failing (unhealthy or exited).
    max_failing_at_once: int
    # Virtual seconds from the push until the rollout completed, paused or
    # otherwise stopped; None when it was still going at `max_hours`.
    seconds_to_stop: float | None
    # Rows left `deferred` (their devices never polled), and how many times
    # devices were sent the release again.
    devices_deferred: int
    retries: int
    # From the first device that was sent the release to the pause; None
    # unless the rollout paused.
    seconds_to_detect: float | None
    simulated_seconds: float
    ticks: int
    # Only set when the rows are kept (they do not exist afterwards otherwise).
    fleet: str | None = None
    rollout_id: str | None = None
    parameters: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        data = asdict(self)
        if self.fleet is None:
            del data["fleet"], data["rollout_id"]
        return data
