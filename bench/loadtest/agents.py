"""The virtual agents: asyncio tasks on one httpx client, bounded in count and time."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field

import httpx

from .model import (
    SHUTDOWN_GRACE_SECONDS,
    AgentIdentity,
    LoadConfig,
    LoadResult,
    require_loopback,
)


@dataclass
class _AgentState:
    etag: str | None = None
    target_version: int | None = None
    services: dict = field(default_factory=dict)


async def run_load(config: LoadConfig, identities: list[AgentIdentity]) -> LoadResult:
    """Run one agent per identity until each has spent its share of the
    request budget or the duration is over."""
    if not identities:
        raise ValueError("At least one agent is needed.")
    if config.requests < len(identities):
        raise ValueError("The request budget must give every agent at least one request.")
    result = LoadResult()
    limits = httpx.Limits(
        max_connections=len(identities), max_keepalive_connections=len(identities)
    )
    # trust_env=False: a proxy set in the environment must never carry the
    # traffic off this machine.
    async with httpx.AsyncClient(
        base_url=str(require_loopback(config.base_url)),
        timeout=config.timeout,
        limits=limits,
        trust_env=False,
        follow_redirects=False,
    ) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + config.duration
        rng = random.Random(config.seed)
        budgets = _split(config.requests, len(identities))
        agents = [
            _agent(client, identity, config, budget, deadline, rng.random(), result)
            for identity, budget in zip(identities, budgets, strict=True)
        ]
        try:
            async with asyncio.timeout(config.duration + config.timeout + SHUTDOWN_GRACE_SECONDS):
                await asyncio.gather(*agents)
        except TimeoutError:
            result.errors["cut off at the hard time limit"] += 1
        result.elapsed = loop.time() - started
    return result


def _split(total: int, parts: int) -> list[int]:
    share, extra = divmod(total, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


async def _agent(
    client: httpx.AsyncClient,
    identity: AgentIdentity,
    config: LoadConfig,
    budget: int,
    deadline: float,
    phase: float,
    result: LoadResult,
) -> None:
    loop = asyncio.get_running_loop()
    state = _AgentState()
    now = loop.time()
    # Agents with a real interval start spread over it, as a fleet does;
    # back-to-back agents start at once.
    next_poll = _first_due(now, config.poll_interval, phase)
    next_report = _first_due(now, config.report_interval, phase)
    path = config.state_path.format(uuid=identity.uuid)
    for _ in range(budget):
        polling = next_poll <= next_report
        due = next_poll if polling else next_report
        if due >= deadline:
            return
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        if loop.time() >= deadline:
            return
        if polling:
            await _poll(client, path, identity, state, config, result)
            next_poll = max(next_poll + config.poll_interval, loop.time())
        else:
            await _report(client, path, identity, state, result)
            next_report = max(next_report + config.report_interval, loop.time())


def _first_due(now: float, interval: float | None, phase: float) -> float:
    if interval is None:
        return math.inf
    return now + interval * phase


async def _poll(
    client: httpx.AsyncClient,
    path: str,
    identity: AgentIdentity,
    state: _AgentState,
    config: LoadConfig,
    result: LoadResult,
) -> None:
    headers = {"Authorization": f"Bearer {identity.api_key}"}
    if config.use_etag and state.etag:
        headers["If-None-Match"] = state.etag
    started = time.perf_counter()
    try:
        response = await client.get(path, headers=headers)
    except httpx.HTTPError as exc:
        result.errors[f"poll {type(exc).__name__}"] += 1
        return
    latency = time.perf_counter() - started
    if response.status_code == 200:
        try:
            body = response.json()
            state.target_version = body["target_version"]
            state.services = body["services"]
        except (ValueError, KeyError, TypeError):
            result.errors["poll 200 with an unexpected body"] += 1
            return
        state.etag = response.headers.get("ETag")
    elif response.status_code != 304:
        result.errors[f"poll HTTP {response.status_code}"] += 1
        return
    result.record(f"poll {response.status_code}", latency)


async def _report(
    client: httpx.AsyncClient,
    path: str,
    identity: AgentIdentity,
    state: _AgentState,
    result: LoadResult,
) -> None:
    targets = state.services or {"web": {"image": identity.image, "tag": identity.tag}}
    body = {
        "target_version": state.target_version or 1,
        "services": {
            name: {
                "image": target["image"],
                "tag": target["tag"],
                "digest": target.get("digest"),
                "status": "running",
                "health": "healthy",
            }
            for name, target in targets.items()
        },
    }
    headers = {"Authorization": f"Bearer {identity.api_key}"}
    started = time.perf_counter()
    try:
        response = await client.patch(path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        result.errors[f"report {type(exc).__name__}"] += 1
        return
    latency = time.perf_counter() - started
    if response.status_code != 200:
        result.errors[f"report HTTP {response.status_code}"] += 1
        return
    result.record("report 200", latency)
