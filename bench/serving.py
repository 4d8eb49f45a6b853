"""Benchmarks over HTTP against the running gunicorn: agent endpoints and webhook."""

import asyncio
import json
import time
from dataclasses import dataclass

import httpx

from .fleets import HOOK_10, HOOK_100K
from .loadtest import (
    STATE_PATH,
    AgentIdentity,
    LoadConfig,
    LoadResult,
    percentile,
    require_loopback,
    run_load,
)
from .measure import ServerCpu

BASELINE_PATH = "/bench/baseline/{uuid}/state"
WEBHOOK_PATH = "/api/v1/webhooks/docker-registry"
# Each measured run is bounded by this too; the counts say what was reached.
RUN_SECONDS = 45.0
WARMUP_REQUESTS_PER_AGENT = 8


@dataclass(frozen=True)
class Scenario:
    key: str
    path: str
    poll_interval: float | None
    report_interval: float | None
    use_etag: bool
    requests: int


@dataclass
class HttpFigures:
    scenario: Scenario
    result: LoadResult
    server_cpu_seconds: float | None
    client_cpu_seconds: float

    @property
    def server_cpu_per_request_ms(self) -> float | None:
        if self.server_cpu_seconds is None or not self.result.ok:
            return None
        return self.server_cpu_seconds / self.result.ok * 1000


def scenarios(poll_requests: int, report_requests: int) -> list[Scenario]:
    """Back to back (interval 0): each agent sends its next request as soon as
    the last one is answered, so the server is never idle."""
    return [
        Scenario("baseline GET", BASELINE_PATH, 0.0, None, True, poll_requests),
        Scenario("poll 304", STATE_PATH, 0.0, None, True, poll_requests),
        Scenario("poll 200", STATE_PATH, 0.0, None, False, poll_requests),
        Scenario("baseline PATCH", BASELINE_PATH, None, 0.0, True, report_requests),
        Scenario("report", STATE_PATH, None, 0.0, True, report_requests),
    ]


def run_http_benchmarks(
    base_url: str,
    identities: list[AgentIdentity],
    server: ServerCpu,
    plan: list[Scenario],
    log,
) -> dict[str, HttpFigures]:
    figures = {}
    for scenario in plan:
        log(f"HTTP: {scenario.key}, {scenario.requests:,} requests, {len(identities)} agents")
        warmup = _config(base_url, scenario, WARMUP_REQUESTS_PER_AGENT * len(identities))
        asyncio.run(run_load(warmup, identities))
        config = _config(base_url, scenario, scenario.requests)
        before = server.sample()
        client_started = time.process_time()
        result = asyncio.run(run_load(config, identities))
        client_cpu = time.process_time() - client_started
        figures[scenario.key] = HttpFigures(
            scenario, result, server.seconds_since(before), client_cpu
        )
    return figures


def _config(base_url: str, scenario: Scenario, requests: int) -> LoadConfig:
    return LoadConfig(
        base_url=base_url,
        requests=requests,
        duration=RUN_SECONDS,
        poll_interval=scenario.poll_interval,
        report_interval=scenario.report_interval,
        use_etag=scenario.use_etag,
        state_path=scenario.path,
    )


# --- webhook ---------------------------------------------------------------


@dataclass
class Latencies:
    """Sequential requests: milliseconds of the answered ones, and the rest."""

    values_ms: list[float]
    errors: list[str]

    def p(self, q: float) -> float:
        return percentile(sorted(self.values_ms), q)


def dockerhub_push(repo_name: str, tag: str) -> bytes:
    """A Docker Hub push notification, as Docker Hub sends it."""
    return json.dumps(
        {
            "callback_url": f"https://registry.hub.docker.com/u/{repo_name}/hook/bench/",
            "push_data": {"pushed_at": int(time.time()), "pusher": "bench", "tag": tag},
            "repository": {
                "name": repo_name.split("/")[1],
                "namespace": repo_name.split("/")[0],
                "repo_name": repo_name,
                "repo_url": f"https://hub.docker.com/r/{repo_name}",
                "status": "Active",
            },
        }
    ).encode()


def run_webhook_benchmarks(base_url: str, secret: str, requests: int, log) -> dict[str, Latencies]:
    """Pushes one after another, each of a new tag (a repeated body would be a
    duplicate). No Celery worker runs: the answer is what is measured, and the
    fan-out tasks stay queued."""
    results = {}
    base_url = str(require_loopback(base_url))
    with httpx.Client(base_url=base_url, trust_env=False, timeout=30.0) as client:
        log(f"webhook: bare POST baseline, {requests} requests")
        results["bare POST"] = _sequential(
            client, BASELINE_PATH.format(uuid="webhook"), "bench/bare", requests, expect=200
        )
        for image, label in ((HOOK_10, "10 devices"), (HOOK_100K, "100,000 devices")):
            log(f"webhook: {label} affected, {requests} pushes")
            repo = image.removeprefix("docker.io/")
            results[label] = _sequential(
                client, f"{WEBHOOK_PATH}?token={secret}", repo, requests, expect=202
            )
    return results


def _sequential(
    client: httpx.Client, path: str, repo: str, requests: int, *, expect: int
) -> Latencies:
    latencies = Latencies([], [])
    # The first push of each kind warms the worker's code paths; not counted.
    for number in range(requests + 1):
        body = dockerhub_push(repo, f"v2.0.{number}")
        started = time.perf_counter()
        try:
            response = client.post(path, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            latencies.errors.append(type(exc).__name__)
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != expect or (
            expect == 202 and response.json().get("status") != "rollout_created"
        ):
            latencies.errors.append(f"HTTP {response.status_code} {response.text[:120]}")
        elif number:
            latencies.values_ms.append(elapsed_ms)
    return latencies
