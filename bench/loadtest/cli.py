"""`python -m bench.loadtest`: create devices, run the agents, print the result."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys

from .agents import run_load
from .model import LoadConfig, LoadResult


def format_summary(result: LoadResult) -> str:
    lines = [
        f"{result.total} requests in {result.elapsed:.2f} s: "
        f"{result.throughput:.1f} answered/s, {sum(result.errors.values())} errors",
        f"{'outcome':<14} {'count':>8} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}",
    ]
    for outcome, count in result.counts.items():
        p = result.percentiles(outcome)
        lines.append(
            f"{outcome:<14} {count:>8} {p['p50']:>9.2f} {p['p90']:>9.2f} {p['p99']:>9.2f}"
        )
    for error, count in sorted(result.errors.items()):
        lines.append(f"{'error':<14} {count:>8}  {error}")
    return "\n".join(lines)


def _interval(text: str) -> float | None:
    if text.lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds or 'off': {text!r}") from exc
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError("an interval is >= 0 seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadtest",
        description="Virtual device agents polling and reporting against a local server.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="loopback server URL")
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1000, help="total, split between agents")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds, at most 600")
    parser.add_argument(
        "--poll-interval", type=_interval, default=1.0, help="seconds, 0 or 'off' (default 1)"
    )
    parser.add_argument(
        "--report-interval", type=_interval, default=None, help="seconds, 0 or 'off' (default off)"
    )
    parser.add_argument(
        "--no-etag", action="store_true", help="never send If-None-Match (every poll is a 200)"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=1, help="spreads the agents' start times")
    parser.add_argument("--keep-devices", action="store_true", help="do not delete the devices")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.agents < 1:
        print("--agents must be at least 1.", file=sys.stderr)
        return 2
    try:
        config = LoadConfig(
            base_url=args.url,
            requests=args.requests,
            duration=args.duration,
            poll_interval=args.poll_interval,
            report_interval=args.report_interval,
            use_etag=not args.no_etag,
            timeout=args.timeout,
            seed=args.seed,
        )
        if args.requests < args.agents:
            raise ValueError("--requests must be at least --agents.")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django

    django.setup()
    from .devices import create_devices, delete_devices

    fleet, identities = create_devices(args.agents)
    try:
        result = asyncio.run(run_load(config, identities))
    finally:
        if not args.keep_devices:
            delete_devices(fleet)
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_summary(result))
    return 1 if result.errors else 0

