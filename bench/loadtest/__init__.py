"""Load generator: N virtual device agents polling and reporting over HTTP.

    python -m bench.loadtest --url http://127.0.0.1:8000 --agents 50 \\
        --requests 5000 --duration 60 --poll-interval 1 --report-interval 10

Each agent is an asyncio task on one shared httpx client. It polls
`GET /api/v1/device/{uuid}/state` with `If-None-Match` (its first poll, without
an ETag, is a 200; the next ones are 304 until the target changes) and reports
`PATCH` the target it last saw as running and healthy. An interval of 0 means
back to back, `off` means never. Every run is bounded twice: by `--requests`
(split evenly between the agents) and by `--duration`; it stops by itself.

The devices are created directly in the database, with keys made by
`devices.keys` (run it with the server's DATABASE_URL), in a fleet of their
own that is deleted afterwards unless `--keep-devices` (`devices.py`; import
it once Django is set up: the rest of the package needs no Django).

Only loopback servers are accepted: this is a tool for measuring our own
server on this machine, never for sending traffic elsewhere.
"""

from .agents import run_load
from .cli import main
from .model import (
    STATE_PATH,
    AgentIdentity,
    LoadConfig,
    LoadResult,
    NotLoopback,
    percentile,
    require_loopback,
)

__all__ = [
    "STATE_PATH",
    "AgentIdentity",
    "LoadConfig",
    "LoadResult",
    "NotLoopback",
    "main",
    "percentile",
    "require_loopback",
    "run_load",
]

