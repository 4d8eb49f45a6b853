"""What a load run is given and what it measures; the loopback guard."""

from __future__ import annotations

import ipaddress
import math
from collections import Counter
from dataclasses import dataclass, field

import httpx

STATE_PATH = "/api/v1/device/{uuid}/state"
DEFAULT_IMAGE = "docker.io/bench/loadtest"
DEFAULT_TAG = "v1.0.0"
MAX_REQUESTS = 1_000_000
MAX_DURATION_SECONDS = 600.0
# Grace for the requests in flight when the deadline passes; past it the run
# is cut off even if the server hangs.
SHUTDOWN_GRACE_SECONDS = 5.0


class NotLoopback(ValueError):
    pass


@dataclass(frozen=True)
class AgentIdentity:
    uuid: str
    api_key: str
    image: str = DEFAULT_IMAGE
    tag: str = DEFAULT_TAG


@dataclass(frozen=True)
class LoadConfig:
    base_url: str
    requests: int
    duration: float
    poll_interval: float | None = 0.0
    report_interval: float | None = None
    use_etag: bool = True
    state_path: str = STATE_PATH
    timeout: float = 10.0
    seed: int = 1

    def __post_init__(self) -> None:
        require_loopback(self.base_url)
        if not 1 <= self.requests <= MAX_REQUESTS:
            raise ValueError(f"requests must be between 1 and {MAX_REQUESTS}.")
        if not 0 < self.duration <= MAX_DURATION_SECONDS:
            raise ValueError(f"duration must be above 0 and at most {MAX_DURATION_SECONDS} s.")
        if self.poll_interval is None and self.report_interval is None:
            raise ValueError("Agents must poll, report or both.")
        for interval in (self.poll_interval, self.report_interval):
            if interval is not None and not (0 <= interval < math.inf):
                raise ValueError("Intervals must be finite and >= 0, or off.")
        if not self.state_path.startswith("/") or self.state_path.startswith("//"):
            raise ValueError("state_path must be an absolute path on the same server.")
        if "{uuid}" not in self.state_path:
            raise ValueError("state_path must contain {uuid}.")


@dataclass
class LoadResult:
    """Latencies (seconds) per outcome such as `poll 304`, and errors by kind."""

    elapsed: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter = field(default_factory=Counter)

    def record(self, outcome: str, latency: float) -> None:
        self.latencies.setdefault(outcome, []).append(latency)

    @property
    def counts(self) -> dict[str, int]:
        return {outcome: len(values) for outcome, values in sorted(self.latencies.items())}

    @property
    def ok(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentiles(self, *outcomes: str) -> dict[str, float]:
        """p50/p90/p99 in milliseconds over the given outcomes (all when none)."""
        values = sorted(
            value
            for outcome, latencies in self.latencies.items()
            if not outcomes or outcome in outcomes
            for value in latencies
        )
        return {f"p{q}": percentile(values, q) * 1000 for q in (50, 90, 99)}

    def as_dict(self) -> dict:
        return {
            "elapsed_seconds": round(self.elapsed, 3),
            "requests": self.total,
            "ok": self.ok,
            "throughput_per_second": round(self.throughput, 1),
            "counts": self.counts,
            "errors": dict(self.errors),
            "latency_ms": {
                outcome: {k: round(v, 2) for k, v in self.percentiles(outcome).items()}
                for outcome in self.counts
            },
        }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def require_loopback(url: str) -> httpx.URL:
    """The URL, if it names a server on this machine; NotLoopback otherwise."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise NotLoopback(f"Not a URL: {url!r}.") from exc
    if parsed.scheme not in ("http", "https"):
        raise NotLoopback(f"Only http(s) URLs are accepted, not {url!r}.")
    host = parsed.host
    if host == "localhost":
        return parsed
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(
            f"Refusing {host!r}: the load generator only targets loopback "
            "addresses (127.0.0.0/8, ::1, localhost)."
        )
    return parsed
