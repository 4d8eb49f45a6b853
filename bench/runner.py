"""The body of bench/run: prepare every step's data, run the steps, write RESULTS.md.

bench/run prepares the database and starts gunicorn, then runs
`python -m bench.runner --url ... --server-pid ...` with DJANGO_SETTINGS_MODULE
set to bench.settings. The steps are the modules named in bench.steps.STEPS.
"""

import argparse
import importlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Bench:
    """What a step gets: the server under test and the run's options."""

    url: str
    gunicorn: str
    server: object  # bench.measure.ServerCpu
    options: argparse.Namespace
    started: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()

    from .loadtest import require_loopback
    from .measure import ServerCpu
    from .report import machine_facts, render
    from .steps import STEPS

    require_loopback(options.url)
    names = options.steps.split(",") if options.steps else STEPS
    unknown = set(names) - set(STEPS)
    if unknown:
        raise SystemExit(f"Unknown steps {sorted(unknown)}; the steps are {STEPS}.")
    steps = [importlib.import_module(f"bench.steps.{name}") for name in names]
    bench = Bench(options.url, options.gunicorn, ServerCpu(options.server_pid), options)
    machine = machine_facts()

    for step in steps:
        if hasattr(step, "prepare"):
            bench.log(f"preparing: {step.TITLE}")
            step.prepare(bench)
    output = options.output or "bench/RESULTS.md"
    previous = Path(output).read_text() if Path(output).exists() else ""
    sections = []
    for step in steps:
        bench.log(f"running: {step.TITLE}")
        sections.append((step.TITLE, step.run(bench)))
        # Saved after every step: a run cut short keeps what it measured,
        # and the sections of steps not run (yet) keep their last figures.
        markdown = render(machine, time.monotonic() - bench.started, sections, previous)
        Path(output).write_text(markdown)
        bench.log(f"saved {output}")
    print(markdown)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.runner")
    parser.add_argument("--url", required=True, help="the gunicorn started by bench/run")
    parser.add_argument("--server-pid", type=int, default=None, help="gunicorn master pid")
    parser.add_argument("--gunicorn", default="", help="how gunicorn runs, for the report")
    parser.add_argument("--steps", default="", help="comma-separated steps (default: all)")
    parser.add_argument(
        "--output", default="", help="the markdown to update (default: bench/RESULTS.md); "
        "sections of steps not run are kept"
    )
    # Five rounds of four seconds: three of three left the poll figures moving
    # by more than the goals' margins between two runs an hour apart.
    parser.add_argument("--rounds", type=int, default=5, help="wrk rounds per scenario (median)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one wrk round")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections")
    parser.add_argument("--webhook-requests", type=int, default=30)
    parser.add_argument("--engine-repeats", type=int, default=3, help="median of this many")
    parser.add_argument(
        "--safety-seeds", type=int, default=100, help="seeds of the flaky-devices scenario"
    )
    parser.add_argument(
        "--safety-full-seeds", type=int, default=3,
        help="of those, how many run to the end (the others through batch 1)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
