"""The markdown of bench/RESULTS.md: the machine, then each figure beside its baseline."""

import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from django.db import connection

from .engine import EngineRow, median_step
from .serving import HttpFigures, Latencies


@dataclass
class Context:
    machine: dict[str, str]
    gunicorn: str
    agents: int
    webhook_requests: int
    engine_repeats: int
    seconds: float = 0.0
    load_at_start: str = field(default_factory=lambda: _load_average())


def machine_facts() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "RAM": _memory(),
        "Python": platform.python_version(),
        "PostgreSQL": postgres,
        "Django": version("django"),
        "gunicorn": version("gunicorn"),
        "httpx (load generator)": version("httpx"),
    }


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _load_average() -> str:
    return " ".join(_read("/proc/loadavg").split()[:3]) or "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# --- formatting ------------------------------------------------------------


def _ratio(ours: float | None, baseline: float | None) -> str:
    if not ours or not baseline:
        return "n/a"
    return f"{ours / baseline:.2f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _bytes(value: int) -> str:
    if value >= 1024 * 1024:
        return f"{value / 1024 / 1024:.1f} MiB"
    return f"{value / 1024:.0f} KiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --- sections --------------------------------------------------------------


def _http_rows(label: str, ours: HttpFigures, base: HttpFigures, outcome: str) -> list[list[str]]:
    result, baseline = ours.result, base.result
    mine = result.percentiles(outcome)
    theirs = baseline.percentiles()
    errors = sum(result.errors.values())
    counts = ", ".join(f"{n:,} × {k}" for k, n in result.counts.items())
    load = f"{result.total:,} requests ({counts}; {errors} errors), baseline {baseline.total:,}"
    return [
        [
            f"{label}: throughput",
            f"{result.throughput:,.0f} req/s",
            f"{baseline.throughput:,.0f} req/s",
            _ratio(result.throughput, baseline.throughput),
            load,
        ],
        [
            f"{label}: latency p50 / p99",
            f"{_ms(mine['p50'])} / {_ms(mine['p99'])}",
            f"{_ms(theirs['p50'])} / {_ms(theirs['p99'])}",
            f"{_ratio(mine['p50'], theirs['p50'])} / {_ratio(mine['p99'], theirs['p99'])}",
            f"p90 {_ms(mine['p90'])}, baseline {_ms(theirs['p90'])}",
        ],
        [
            f"{label}: server CPU per request",
            _ms(ours.server_cpu_per_request_ms),
            _ms(base.server_cpu_per_request_ms),
            _ratio(ours.server_cpu_per_request_ms, base.server_cpu_per_request_ms),
            f"load generator CPU {ours.client_cpu_seconds:.1f} s over "
            f"{result.elapsed:.1f} s (baseline {base.client_cpu_seconds:.1f} s over "
            f"{baseline.elapsed:.1f} s)",
        ],
    ]


def _http_section(context: Context, http: dict[str, HttpFigures]) -> list[str]:
    rows = _http_rows("Poll, 304 path", http["poll 304"], http["baseline GET"], "poll 304")
    rows += _http_rows("Poll, 200 path", http["poll 200"], http["baseline GET"], "poll 200")
    rows += _http_rows("Report (PATCH)", http["report"], http["baseline PATCH"], "report 200")
    return [
        "## Agent endpoints over HTTP",
        "",
        f"gunicorn `{context.gunicorn}`; {context.agents} virtual agents (bench/loadtest.py), "
        "each sending its next request as soon as the last is answered. Baseline: a bare "
        "Django view in the same gunicorn, behind the same middleware, that answers GET with "
        "a 304 and PATCH with a small 200 without touching the database or the cache. "
        "The load generator shares the two cores: where its CPU time nears the elapsed "
        "time it was the bottleneck, and the throughput ratio understates the gap; the "
        "server CPU per request (gunicorn workers and PostgreSQL backends, from /proc) "
        "does not depend on it.",
        "",
        *_table(["measurement", "ours", "bare baseline", "ours / baseline", "load"], rows),
    ]


def _seconds(steps) -> str:
    median = median_step(steps).seconds
    if len(steps) == 1:
        return f"{median:.2f} s"
    low, high = min(s.seconds for s in steps), max(s.seconds for s in steps)
    return f"{median:.2f} s ({low:.2f}–{high:.2f})"


def _engine_section(context: Context, engine: list[EngineRow]) -> list[str]:
    rows = []
    for row in engine:
        ours, baseline = median_step(row.ours), median_step(row.baseline)
        rows.append(
            [
                row.label,
                _seconds(row.ours),
                _seconds(row.baseline),
                _ratio(ours.seconds, baseline.seconds),
                f"{ours.queries} / {baseline.queries}",
                f"{_bytes(ours.peak_bytes)} / {_bytes(baseline.peak_bytes)}",
            ]
        )
    header = [
        "step",
        "ours",
        "raw SQL baseline",
        "ours / baseline",
        "queries (ours / baseline)",
        "peak Python memory (ours / baseline)",
    ]
    return [
        "## Rollout engine at fleet scale (in process, PostgreSQL)",
        "",
        "Create: `rollout_create_for_push` + `rollout_fan_out` (a manual-strategy policy, "
        "so the fan-out only fills the rollout) against one `INSERT … SELECT` of the same "
        "rows. Advance: `rollout_start` of the 100,000-device rollout, which schedules its "
        "first batch through `rollout_advance_locked` (the tick's code), against three "
        "`UPDATE`s (rollout rows, services, devices) and the events' `INSERT … SELECT` on "
        "the same devices, in one transaction. Wall time is the median of "
        f"{context.engine_repeats} rounds (range in brackets), each step starting from a "
        "vacuumed and checkpointed database; queries include BEGIN/COMMIT (Django's "
        "CaptureQueriesContext); memory is the peak of the Python heap (tracemalloc) "
        "during the step, median of the rounds.",
        "",
        *_table(header, rows),
    ]


def _latency_cells(latencies: Latencies) -> str:
    return (
        f"p50 {_ms(latencies.p(50))}, p90 {_ms(latencies.p(90))}, "
        f"p99 {_ms(latencies.p(99))}"
    )


def _webhook_section(context: Context, webhooks: dict[str, Latencies]) -> list[str]:
    pairs = [
        ("10 devices", "bare POST", "bare view, same body"),
        ("100,000 devices", "10 devices", "webhook, 10 affected devices"),
    ]
    rows = []
    for label, base, base_label in pairs:
        ours, baseline = webhooks[label], webhooks[base]
        errors = len(ours.errors) + len(baseline.errors)
        rows.append(
            [
                f"Webhook answer, {label} affected",
                _latency_cells(ours),
                f"{_latency_cells(baseline)} ({base_label})",
                _ratio(ours.p(50), baseline.p(50)),
                f"{len(ours.values_ms)} pushes, {errors} errors"
                + (f": {ours.errors[0]}" if ours.errors else ""),
            ]
        )
    return [
        "## Webhook answer latency",
        "",
        "`POST /api/v1/webhooks/docker-registry?token=…` with a Docker Hub payload, one "
        f"push after another ({context.webhook_requests} measured, each a new tag, after one "
        "warm-up), to the same gunicorn. No Celery worker runs: the answer is measured, the "
        "fan-out tasks stay queued.",
        "",
        *_table(["measurement", "ours", "baseline", "p50 ratio", "load"], rows),
    ]


def render(
    context: Context,
    http: dict[str, HttpFigures],
    engine: list[EngineRow],
    webhooks: dict[str, Latencies],
) -> str:
    machine = context.machine
    facts = [[name, value] for name, value in machine.items()]
    load = f"{context.load_at_start} / {_load_average()}"
    facts.append(["load average (1, 5, 15 min) at start / end", load])
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run` on {machine['date']} in {context.seconds:.0f} s. "
        "Every figure stands beside its baseline measured in the same run; the ratio is "
        "the figure that matters, since this machine is shared and absolute numbers move "
        "with what else runs on it.",
        "",
        *_table(["machine", ""], facts),
        "",
        *_http_section(context, http),
        "",
        *_webhook_section(context, webhooks),
        "",
        *_engine_section(context, engine),
        "",
    ]
    return "\n".join(lines)
