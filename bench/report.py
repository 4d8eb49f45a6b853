"""The markdown of bench/RESULTS.md: the machine, then one section per step.

Also the formatting helpers the steps share (`table`, `ratio`, `ms`, `size`).
"""

import os
import platform
import re
import shutil
import subprocess
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from django.db import connection


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
        "load generator": _wrk_version(),
        "load average (1, 5, 15 min) at start": load_average(),
    }


def _wrk_version() -> str:
    if not shutil.which("wrk"):
        return "wrk not installed"
    # `wrk -v` prints its version and exits with status 1.
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


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


def load_average() -> str:
    return " ".join(_read("/proc/loadavg").split()[:3]) or "unknown"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# --- formatting helpers for the steps ---------------------------------------


def ratio(ours: float | None, baseline: float | None) -> str:
    if not ours or not baseline:
        return "n/a"
    return f"{ours / baseline:.2f}"


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def size(value: int) -> str:
    if value >= 1024 * 1024:
        return f"{value / 1024 / 1024:.1f} MiB"
    return f"{value / 1024:.0f} KiB"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --- the document ------------------------------------------------------------


# A section starts at its "## " heading, or at a marker line just above it
# (bench/inventory.py keeps its section between such markers).
_SECTION_START = re.compile(r"^(?:<!-- [\w-]+:begin -->\n)?## (.*)$", re.MULTILINE)


def sections_of(markdown: str) -> list[tuple[str, str]]:
    """(title, text) of each section of a RESULTS.md, in order."""
    starts = list(_SECTION_START.finditer(markdown))
    return [
        (match[1], markdown[match.start() : starts[n + 1].start() if n + 1 < len(starts) else None])
        for n, match in enumerate(starts)
    ]


def render(
    machine: dict[str, str],
    seconds: float,
    sections: list[tuple[str, list[str]]],
    previous: str = "",
) -> str:
    """The document: the sections measured now, then the sections of
    `previous` (the last RESULTS.md) that this run did not measure, kept as
    they were (a run of some steps updates only theirs)."""
    facts = [[name, value] for name, value in machine.items()]
    facts.append(["load average (1, 5, 15 min) at the end", load_average()])
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/run` on {machine['date']} in {seconds:.0f} s. Every figure "
        "stands beside its baseline measured in the same run; the ratio is the figure "
        "that matters, since this machine is shared and absolute numbers move with what "
        "else runs on it.",
        "",
        *table(["machine", ""], facts),
        "",
    ]
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    measured = {title for title, _ in sections}
    kept = [text.rstrip("\n") + "\n" for title, text in sections_of(previous) if title not in measured]
    return "\n".join(lines) + "".join(f"\n{text}" for text in kept)
