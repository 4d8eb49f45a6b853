"""The values the agent passes around: what the server wants, what runs.

Field names and state names follow CONTRACT.md section 2, so a value turns
into JSON for the server without renaming anything.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("downloading", "installing", "running", "exited", "failed")
# How a device swaps a service's container (CONTRACT section 8).
DOWNLOAD_THEN_KILL = "download-then-kill"
KILL_THEN_DOWNLOAD = "kill-then-download"
DELETE_THEN_DOWNLOAD = "delete-then-download"
UPDATE_STRATEGIES = (DOWNLOAD_THEN_KILL, KILL_THEN_DOWNLOAD, DELETE_THEN_DOWNLOAD)
DEFAULT_STOP_TIMEOUT_SECONDS = 10
HEALTHS = ("starting", "healthy", "unhealthy", "none")


class InvalidTarget(ValueError):
    """The server's answer does not have the shape of CONTRACT.md section 2."""


@dataclass(frozen=True)
class ServiceTarget:
    """What one service should run. `image` is the normalized repository."""

    image: str
    tag: str | None = None
    digest: str | None = None
    rollout_id: str | None = None
    # How to swap the old container for this one, and how long the old one
    # may take to stop. A server that does not send them gets the defaults.
    update_strategy: str = DOWNLOAD_THEN_KILL
    stop_timeout_seconds: int = DEFAULT_STOP_TIMEOUT_SECONDS

    @classmethod
    def from_json(cls, data: Any) -> "ServiceTarget":
        if not isinstance(data, dict) or not isinstance(data.get("image"), str):
            raise InvalidTarget(f"A service target needs an 'image' string, got {data!r}.")
        return cls(
            image=data["image"],
            tag=_optional_str(data, "tag"),
            digest=_optional_str(data, "digest"),
            rollout_id=_optional_str(data, "rollout_id"),
            update_strategy=_update_strategy(data),
            stop_timeout_seconds=_stop_timeout(data),
        )

    def to_json(self) -> dict[str, str | int | None]:
        return asdict(self)

    @property
    def release(self) -> tuple[str, str | None, str | None]:
        """What runs; a new rollout id for the same release changes nothing on the device."""
        return (self.image, self.tag, self.digest)

    @property
    def reference(self) -> str:
        """`image:tag@digest`: pinned by digest when there is one.

        Docker ignores the tag of a reference that carries a digest, but keeping
        it makes `docker ps` on the device readable.
        """
        text = f"{self.image}:{self.tag}" if self.tag else self.image
        return f"{text}@{self.digest}" if self.digest else text


@dataclass(frozen=True)
class Target:
    """One answer of the poll endpoint."""

    version: int
    services: dict[str, ServiceTarget] = field(default_factory=dict)
    poll_interval_seconds: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> "Target":
        if not isinstance(data, dict):
            raise InvalidTarget("The target state must be a JSON object.")
        version = data.get("target_version")
        services = data.get("services", {})
        interval = data.get("poll_interval_seconds")
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidTarget(f"'target_version' must be an integer, got {version!r}.")
        if not isinstance(services, dict):
            raise InvalidTarget("'services' must be an object of service name to target.")
        if interval is not None and (not isinstance(interval, (int, float)) or interval <= 0):
            raise InvalidTarget(f"'poll_interval_seconds' must be positive, got {interval!r}.")
        return cls(
            version=version,
            services={name: ServiceTarget.from_json(s) for name, s in services.items()},
            poll_interval_seconds=interval,
        )


@dataclass(frozen=True)
class ServiceState:
    """What one service runs, as the agent reports it."""

    image: str | None
    tag: str | None
    digest: str | None
    status: str
    health: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}.")
        if self.health not in HEALTHS:
            raise ValueError(f"health {self.health!r} is not one of {HEALTHS}.")

    @classmethod
    def of(cls, target: ServiceTarget, *, status: str, health: str) -> "ServiceState":
        return cls(target.image, target.tag, target.digest, status=status, health=health)

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)

    @property
    def settled(self) -> bool:
        """False while the service is still on its way to a verdict."""
        return self.status not in ("downloading", "installing") and self.health != "starting"


def _optional_str(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidTarget(f"'{key}' must be a string or null, got {value!r}.")
    return value


def _update_strategy(data: dict) -> str:
    value = data.get("update_strategy")
    if value is None:
        return DOWNLOAD_THEN_KILL
    if not isinstance(value, str):
        raise InvalidTarget(f"'update_strategy' must be a string, got {value!r}.")
    # A strategy this agent does not know (a newer server) still updates the
    # device, the safe default way, rather than never converging.
    return value if value in UPDATE_STRATEGIES else DOWNLOAD_THEN_KILL


def _stop_timeout(data: dict) -> int:
    value = data.get("stop_timeout_seconds")
    if value is None:
        return DEFAULT_STOP_TIMEOUT_SECONDS
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidTarget(f"'stop_timeout_seconds' must be a whole number >= 0, got {value!r}.")
    return value
