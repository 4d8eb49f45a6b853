"""Command line: `python -m agent --server URL --state-file PATH ...`.

The provisioning key may come from FLEET_PROVISIONING_KEY instead of the
command line, so it does not show in the process list.
"""

import argparse
import logging
import os
import signal
import sys
import uuid as uuid_lib
from pathlib import Path

from .client import DEFAULT_TIMEOUT_SECONDS, AgentClient
from .drivers import Driver
from .drivers.compose import ComposeDriver
from .drivers.simulated import (
    OUTCOMES,
    Behaviour,
    BehaviourRules,
    SimulatedDevice,
    SimulatedDriver,
)
from .loop import Agent, AgentConfigError
from .state import StateFileError

logger = logging.getLogger("agent")


class _Stop(Exception):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m agent", description="Reference device agent of the fleet control plane."
    )
    add = parser.add_argument
    add("--server", required=True, help="root URL of the server, e.g. https://fleet.example.com")
    add(
        "--provisioning-key",
        default=os.environ.get("FLEET_PROVISIONING_KEY"),
        help="fleet provisioning key for the first start (default: $FLEET_PROVISIONING_KEY)",
    )
    add("--state-file", required=True, type=Path, help="identity and applied target (mode 0600)")
    add("--driver", choices=("compose", "simulated"), default="compose")
    add("--uuid", type=_uuid, help="register under this uuid instead of a random one")
    add("--name", default="", help="device name sent when registering")
    add("--tag", action="append", default=[], dest="tags", help="device tag (repeatable)")
    add("--once", action="store_true", help="one round (register, poll, apply, report), then exit")
    add("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="HTTP timeout, seconds")
    add("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    compose = parser.add_argument_group("compose driver").add_argument
    compose(
        "--compose-file",
        action="append",
        default=[],
        type=Path,
        dest="compose_files",
        help="the device's compose file (repeatable)",
    )
    compose("--override-file", type=Path, help="file the agent writes (default: by the state file)")
    compose("--project-name", help="docker compose project name")
    compose("--docker", default="docker", help="docker executable")

    sim = parser.add_argument_group("simulated driver").add_argument
    sim("--sim-pull-seconds", type=float, default=0.0)
    sim("--sim-start-seconds", type=float, default=0.0)
    sim("--sim-health-seconds", type=float, default=0.0)
    sim("--sim-outcome", choices=OUTCOMES, default="healthy")
    sim(
        "--sim-rule",
        action="append",
        default=[],
        metavar="GLOB=OUTCOME",
        help="outcome for releases whose image:tag matches GLOB, e.g. '*:v2-bad=unhealthy'",
    )
    sim("--sim-never-report", action="store_true", help="take targets but never report")
    args = parser.parse_args(argv)
    if args.driver == "compose" and not args.compose_files:
        parser.error("--driver compose needs --compose-file")
    try:
        args.behaviour = simulated_behaviour(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _uuid(text: str) -> str:
    try:
        return str(uuid_lib.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def simulated_behaviour(args: argparse.Namespace) -> BehaviourRules:
    def behaviour(outcome: str) -> Behaviour:
        return Behaviour(
            pull_seconds=args.sim_pull_seconds,
            start_seconds=args.sim_start_seconds,
            health_seconds=args.sim_health_seconds,
            outcome=outcome,
            reports=not args.sim_never_report,
        )

    rules = []
    for rule in args.sim_rule:
        pattern, sep, outcome = rule.rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"--sim-rule {rule!r} is not GLOB=OUTCOME.")
        rules.append((pattern, behaviour(outcome)))
    return BehaviourRules(default=behaviour(args.sim_outcome), rules=tuple(rules))


def build_driver(args: argparse.Namespace) -> Driver:
    if args.driver == "simulated":
        return SimulatedDriver(SimulatedDevice(args.behaviour))
    override = args.override_file or args.state_file.with_name("fleet-agent.override.yml")
    return ComposeDriver(
        compose_files=args.compose_files,
        override_file=override,
        project_name=args.project_name,
        docker=args.docker,
    )


def _raise_stop(signum, frame) -> None:
    raise _Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with AgentClient(args.server, timeout=args.timeout) as client:
        try:
            agent = Agent(
                client=client,
                driver=build_driver(args),
                state_file=args.state_file,
                provisioning_key=args.provisioning_key,
                uuid=args.uuid,
                name=args.name,
                tags=args.tags,
            )
        except (AgentConfigError, StateFileError) as exc:
            logger.critical("%s", exc)
            return 2
        # Every write of the state file is atomic, so stopping anywhere is safe.
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            ok = agent.run(once=args.once)
        except (_Stop, KeyboardInterrupt):
            logger.info("Stopping.")
            return 0
        except AgentConfigError as exc:
            logger.critical("%s", exc)
            return 2
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
