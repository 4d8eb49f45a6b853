"""Run wrk with bench/agents.lua and read its result.

wrk is a C load generator (Debian package `wrk`): one of its threads keeps
many keep-alive connections busy for a fraction of the CPU a Python client
would need, so what is measured is the server, not the load generator.
"""

import json
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .loadtest import require_loopback

SCRIPT = Path(__file__).with_name("agents.lua")
MARKER = "WRK_JSON "
# One request in this many asks for its connection to be closed, and wrk
# opens another (see agents.lua): the connections keep going to whichever
# gunicorn worker is free to accept them, as a real fleet's do, instead of
# being split between the workers once, by chance, at the start.
CLOSE_EVERY = 50


@dataclass(frozen=True)
class Device:
    uuid: str
    key: str
    etag: str


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def unexpected(self, expected: int) -> int:
        """Socket errors plus answers with another status than `expected`."""
        return self.errors + sum(n for status, n in self.statuses.items() if status != expected)


class DeviceFile:
    """The devices of a scenario, written once for the Lua script to read."""

    def __init__(self, devices: Iterable[Device]):
        self._file = tempfile.NamedTemporaryFile(
            "w", prefix="fleet-bench-devices-", suffix=".txt", delete=False
        )
        with self._file as out:
            for device in devices:
                out.write(f"{device.uuid} {device.key} {device.etag}\n")
        self.path = self._file.name

    def remove(self) -> None:
        Path(self.path).unlink(missing_ok=True)


def run_wrk(
    base_url: str,
    devices: DeviceFile,
    *,
    mode: str,
    path: str,
    seconds: float,
    connections: int,
    seed: int,
    threads: int = 1,
    close_every: int = CLOSE_EVERY,
) -> WrkResult:
    """`mode` is poll304, poll200 or report (see agents.lua); `path` has "{uuid}"."""
    require_loopback(base_url)
    command = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=10s",
        f"--script={SCRIPT}",
        base_url,
        "--",
        devices.path,
        mode,
        path,
        str(seed),
        str(close_every),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in completed.stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line.removeprefix(MARKER))
            return WrkResult(
                requests=data["requests"],
                seconds=data["seconds"],
                errors=data["errors"],
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                statuses={int(status): n for status, n in data["statuses"].items()},
            )
    raise RuntimeError(f"wrk gave no result (exit {completed.returncode}): {completed.stderr}")
