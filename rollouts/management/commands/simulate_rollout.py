import argparse
import json
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rollouts.models import UpdateStrategy
from rollouts.simulation import (
    PULL_DISTRIBUTIONS,
    FleetSimulation,
    Progress,
    SimulationConfig,
    SimulationError,
    SimulationResult,
)
from rollouts.simulation.scenarios import FLAKY_FULL_SEEDS, release_safety_table, table_lines

BAR_WIDTH = 30
REDRAW_SECONDS = 0.2
STOP_VERBS = {
    "paused": "pause",
    "completed": "complete",
    "rolled_back": "roll back",
    "cancelled": "cancel",
}


class Command(BaseCommand):
    help = (
        "Simulate a rollout on a fleet of virtual devices: builds the fleet, a policy "
        "and a push, and drives the real engine on a virtual clock, in-process. The "
        "simulated rows live in one transaction, rolled back at the end unless --keep."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = SimulationConfig()
        fleet = parser.add_argument_group("fleet and devices")
        fleet.add_argument("--devices", type=int, default=defaults.devices)
        fleet.add_argument("--seed", type=int, default=defaults.seed)
        fleet.add_argument(
            "--bad-rate", type=float, default=defaults.bad_rate,
            help="Probability that a device fails on the new release (0..1).",
        )
        fleet.add_argument(
            "--crash-share", type=float, default=defaults.crash_share,
            help="Share of the failures that crash instead of going unhealthy (0..1).",
        )
        fleet.add_argument(
            "--never-report-rate", type=float, default=defaults.never_report_rate,
            help="Probability that a device never reports (it times out).",
        )
        fleet.add_argument(
            "--offline-rate", type=float, default=defaults.offline_rate,
            help="Probability that a device never polls while the rollout runs (deferred).",
        )
        fleet.add_argument(
            "--flaky-rate", type=float, default=defaults.flaky_rate,
            help="Probability that a device fails its first attempt, then is healthy.",
        )
        fleet.add_argument(
            "--pull-delay-mean", type=float, default=defaults.pull_delay_mean,
            help="Mean seconds a device takes to pull a new target.",
        )
        fleet.add_argument(
            "--pull-delay-distribution", choices=PULL_DISTRIBUTIONS,
            default=defaults.pull_delay_distribution,
            help="exponential, or uniform over [0, 2 x mean].",
        )
        fleet.add_argument(
            "--health-delay", type=float, default=defaults.health_delay,
            help="Seconds health stays 'starting' after the pull.",
        )
        clock = parser.add_argument_group("clock")
        clock.add_argument(
            "--tick-seconds", type=float, default=defaults.tick_seconds,
            help="Virtual seconds between engine ticks (the beat period).",
        )
        clock.add_argument("--max-hours", type=float, default=defaults.max_hours)
        policy = parser.add_argument_group("policy")
        policy.add_argument("--strategy", choices=UpdateStrategy.values, default=defaults.strategy)
        policy.add_argument(
            "--batches", default=",".join(map(str, defaults.batch_percentages)),
            help="Cumulative batch percentages, e.g. 10,50,100.",
        )
        policy.add_argument(
            "--batch-delay-minutes", type=float, default=defaults.batch_delay_minutes
        )
        policy.add_argument("--max-failure-rate", type=float, default=defaults.max_failure_rate)
        policy.add_argument("--min-failure-samples", type=int, default=defaults.min_failure_samples)
        policy.add_argument(
            "--health-timeout-seconds", type=int, default=defaults.health_check_timeout_seconds
        )
        policy.add_argument(
            "--ramp-initial", type=_ramp_initial, default=defaults.ramp_initial,
            help=f"Devices released while none is healthy, or 'none' to release batches whole "
            f"(default {defaults.ramp_initial}).",
        )
        policy.add_argument(
            "--ramp-factor", type=float, default=defaults.ramp_factor,
            help="More devices released per healthy one.",
        )
        policy.add_argument(
            "--max-retries", type=int, default=defaults.max_retries,
            help="Times a failed device is sent the release again.",
        )
        policy.add_argument("--no-auto-rollback", action="store_true")
        policy.add_argument("--no-health-check", action="store_true")
        output = parser.add_argument_group("output")
        output.add_argument("--json", action="store_true", help="Print only the result as JSON.")
        output.add_argument(
            "--scenarios", action="store_true",
            help="Run the release-safety scenarios (a fresh policy's settings, fixed seeds) and "
            "print their table in Markdown; --devices and --seeds size them.",
        )
        output.add_argument(
            "--seeds", type=int, default=100,
            help="With --scenarios: seeds of the flaky-devices scenario.",
        )
        output.add_argument(
            "--full-seeds", type=int, default=FLAKY_FULL_SEEDS,
            help="With --scenarios: how many of those run to the end (the others through "
            "batch 1, where a false pause can happen).",
        )
        output.add_argument(
            "--keep", action="store_true",
            help="Commit the simulated fleet, policy and rollout instead of rolling them back.",
        )

    def handle(self, *args, **options):
        if options["scenarios"]:
            self._scenarios(options)
            return
        config = _config(options)
        progress = None if options["json"] else _ProgressBar(self.stderr)
        started = time.perf_counter()
        try:
            simulation = FleetSimulation(config, progress=progress)
        except SimulationError as error:
            raise CommandError(str(error)) from None
        result = simulation.run(keep=options["keep"])
        wall = time.perf_counter() - started
        if progress is not None:
            progress.close()
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2, sort_keys=True))
        else:
            self.stdout.write(_table(result, wall))


    def _scenarios(self, options: dict) -> None:
        if min(options["devices"], options["seeds"], options["full_seeds"]) < 1:
            raise CommandError("--devices, --seeds and --full-seeds must be at least 1.")
        started = time.perf_counter()
        rows = release_safety_table(
            devices=options["devices"],
            flaky_seeds=options["seeds"],
            flaky_full_seeds=options["full_seeds"],
            log=lambda line: self.stderr.write(f"{time.perf_counter() - started:6.0f}s {line}"),
        )
        self.stdout.write("\n".join(table_lines(rows)))


def _ramp_initial(value: str) -> int | None:
    if value.lower() in ("none", "null"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number or 'none', got {value!r}") from None


def _config(options: dict) -> SimulationConfig:
    try:
        batches = tuple(int(part) for part in options["batches"].split(","))
    except ValueError:
        raise CommandError(
            f"--batches must be whole percentages separated by commas, got {options['batches']!r}."
        ) from None
    return SimulationConfig(
        devices=options["devices"],
        seed=options["seed"],
        bad_rate=options["bad_rate"],
        crash_share=options["crash_share"],
        never_report_rate=options["never_report_rate"],
        offline_rate=options["offline_rate"],
        flaky_rate=options["flaky_rate"],
        ramp_initial=options["ramp_initial"],
        ramp_factor=options["ramp_factor"],
        max_retries=options["max_retries"],
        pull_delay_mean=options["pull_delay_mean"],
        pull_delay_distribution=options["pull_delay_distribution"],
        health_delay=options["health_delay"],
        tick_seconds=options["tick_seconds"],
        max_hours=options["max_hours"],
        strategy=options["strategy"],
        batch_percentages=batches,
        batch_delay_minutes=options["batch_delay_minutes"],
        max_failure_rate=options["max_failure_rate"],
        min_failure_samples=options["min_failure_samples"],
        health_check_timeout_seconds=options["health_timeout_seconds"],
        auto_rollback=not options["no_auto_rollback"],
        health_check=not options["no_health_check"],
    )


class _ProgressBar:
    """One line, rewritten with a carriage return. Redrawn a few times a
    second at most, so that a log file does not get a line per tick."""

    def __init__(self, stream):
        self._stream = stream
        self._pending = ""
        self._drawn = ""
        self._drawn_at = 0.0

    def __call__(self, progress: Progress) -> None:
        share = progress.targeted / progress.devices
        filled = round(share * BAR_WIDTH)
        self._pending = (
            f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{progress.targeted}/{progress.devices} reached  "
            f"batch {progress.current_batch}/{progress.total_batches}  "
            f"{progress.status:<11}  t+{_clock(progress.seconds)}"
        )
        if time.monotonic() - self._drawn_at >= REDRAW_SECONDS:
            self._draw()

    def close(self) -> None:
        self._draw()
        if self._drawn:
            self._stream.write("")

    def _draw(self) -> None:
        if self._pending == self._drawn:
            return
        self._stream.write(self._pending, ending="")
        self._stream.flush()
        self._drawn, self._drawn_at = self._pending, time.monotonic()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _table(result: SimulationResult, wall: float) -> str:
    failures = ", ".join(f"{reason} {count}" for reason, count in result.failures.items())
    if result.seconds_to_stop is None:
        stop = ("virtual time run, still going", _clock(result.simulated_seconds))
    else:
        verb = STOP_VERBS.get(result.status, "stop")
        stop = (f"virtual time to {verb}", _clock(result.seconds_to_stop))
    reason = f" ({result.status_reason})" if result.status_reason else ""
    rows = [
        ("final status", result.status + reason),
        ("batches reached", f"{result.batches_reached} of {result.total_batches}"),
        (
            "devices",
            f"{result.devices} ({result.silent_devices} never report, "
            f"{result.offline_devices} offline)",
        ),
        ("devices that received the new image", result.devices_targeted),
        ("devices that ran the new image", result.devices_ran_new_image),
        ("devices failed", f"{result.devices_failed} ({failures})"),
        ("devices rolled back", result.devices_rolled_back),
        ("devices deferred (never polled)", result.devices_deferred),
        ("retries", result.retries),
        ("rolled back, back on the old image", result.devices_back_on_old_image),
        stop,
        ("max devices on the failing release", result.max_on_failing_release),
        ("max devices failing at once", result.max_failing_at_once),
        ("ticks", result.ticks),
        ("wall time", f"{wall:.1f} s"),
    ]
    if result.fleet:
        rows.append(("kept fleet / rollout", f"{result.fleet} / {result.rollout_id}"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)

