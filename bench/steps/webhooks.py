"""Webhook answer latency: a push affecting 10 and 100,000 devices, over HTTP."""

import json
import time
from dataclasses import dataclass

import httpx
from django.conf import settings

from ..fleets import HOOK_10, HOOK_100K, ensure_fleet, ensure_policy
from ..loadtest import percentile, require_loopback
from ..report import ms, ratio, table

TITLE = "Webhook answer latency"
BASELINE_PATH = "/bench/baseline/{uuid}/state"
WEBHOOK_PATH = "/api/v1/webhooks/docker-registry"


def prepare(bench) -> None:
    ensure_policy()
    ensure_fleet(HOOK_10, 10)
    ensure_fleet(HOOK_100K, 100_000)


def run(bench) -> list[str]:
    requests = bench.options.webhook_requests
    results = run_webhook_benchmarks(bench.url, settings.DOCKER_WEBHOOK_SECRET, requests, bench.log)
    return section(requests, results)


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


def _latency_cells(latencies: Latencies) -> str:
    return f"p50 {ms(latencies.p(50))}, p90 {ms(latencies.p(90))}, p99 {ms(latencies.p(99))}"


def section(requests: int, webhooks: dict[str, Latencies]) -> list[str]:
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
                ratio(ours.p(50), baseline.p(50)),
                f"{len(ours.values_ms)} pushes, {errors} errors"
                + (f": {ours.errors[0]}" if ours.errors else ""),
            ]
        )
    return [
        "`POST /api/v1/webhooks/docker-registry?token=…` with a Docker Hub payload, one "
        f"push after another ({requests} measured, each a new tag, after one warm-up), to "
        "the same gunicorn. No Celery worker runs: the answer is measured, the fan-out "
        "tasks stay queued.",
        "",
        *table(["measurement", "ours", "baseline", "p50 ratio", "load"], rows),
    ]
