"""The body of bench/run: build the fleets, measure, print and save the tables.

bench/run prepares the database and starts gunicorn, then runs
`python -m bench.runner --url ... --server-pid ...` with DJANGO_SETTINGS_MODULE
set to bench.settings.
"""

import argparse
import os
import sys
import time

import django


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()

    from django.conf import settings

    from . import fleets
    from .engine import run_engine_benchmarks
    from .loadtest import require_loopback
    from .loadtest.devices import create_devices
    from .measure import ServerCpu
    from .report import Context, machine_facts, render
    from .serving import run_http_benchmarks, run_webhook_benchmarks, scenarios

    require_loopback(args.url)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    context = Context(
        machine=machine_facts(),
        gunicorn=args.gunicorn,
        agents=args.agents,
        webhook_requests=args.webhook_requests,
        engine_repeats=args.engine_repeats,
    )
    log("building fleets: " + ", ".join(f"{n:,}" for n in fleets.FLEETS.values()) + " devices")
    fleets.build_policy()
    for image, count in fleets.FLEETS.items():
        fleets.build_fleet(image, count)
    _, identities = create_devices(args.agents, image=fleets.HTTP_IMAGE, tag=fleets.OLD_TAG)
    fleets.settle()

    plan = scenarios(args.poll_requests, args.report_requests)
    http = run_http_benchmarks(args.url, identities, ServerCpu(args.server_pid), plan, log)
    webhooks = run_webhook_benchmarks(
        args.url, settings.DOCKER_WEBHOOK_SECRET, args.webhook_requests, log
    )
    engine = run_engine_benchmarks(log, args.engine_repeats)

    context.seconds = time.monotonic() - started
    markdown = render(context, http, engine, webhooks)
    print(markdown)
    with open(args.output, "w") as output:
        output.write(markdown)
    log(f"saved {args.output}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.runner")
    parser.add_argument("--url", required=True, help="the gunicorn started by bench/run")
    parser.add_argument("--server-pid", type=int, default=None, help="gunicorn master pid")
    parser.add_argument("--gunicorn", default="", help="the gunicorn options, for the report")
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--poll-requests", type=int, default=3000)
    parser.add_argument("--report-requests", type=int, default=1500)
    parser.add_argument("--webhook-requests", type=int, default=30)
    parser.add_argument("--engine-repeats", type=int, default=3, help="median of this many")
    parser.add_argument("--output", default="bench/RESULTS.md")
    return parser


if __name__ == "__main__":
    sys.exit(main())
