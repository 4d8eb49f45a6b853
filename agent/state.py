"""The agent's state file: its identity and the last target it applied.

The file holds the device api key, so it is written with mode 0600, and
always atomically (temporary file in the same directory, fsync, rename): a
device that loses power mid-write keeps the old file, never half a file. A
lost or torn identity would make the agent register as a new device.
"""

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .model import ServiceTarget

FORMAT_VERSION = 1


class StateFileError(Exception):
    """The state file exists but cannot be used; never silently replaced."""


@dataclass(frozen=True)
class AgentState:
    uuid: str
    # None between choosing a uuid and hearing back from the register call.
    api_key: str | None = None
    fleet: str | None = None
    applied_target_version: int | None = None
    applied_services: dict[str, ServiceTarget] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return self.api_key is not None

    def applied(self, *, version: int, services: dict[str, ServiceTarget]) -> "AgentState":
        return replace(self, applied_target_version=version, applied_services=dict(services))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "uuid": self.uuid,
            "api_key": self.api_key,
            "fleet": self.fleet,
            "applied_target_version": self.applied_target_version,
            "applied_services": {n: s.to_json() for n, s in self.applied_services.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> "AgentState":
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise StateFileError(f"Not an agent state file of format {FORMAT_VERSION}.")
        if not isinstance(data.get("uuid"), str):
            raise StateFileError("The state file has no device uuid.")
        services = data.get("applied_services") or {}
        return cls(
            uuid=data["uuid"],
            api_key=data.get("api_key"),
            fleet=data.get("fleet"),
            applied_target_version=data.get("applied_target_version"),
            applied_services={n: ServiceTarget.from_json(s) for n, s in services.items()},
        )


def load_state(path: Path) -> AgentState | None:
    """The stored state, or None when the agent has never run with this path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"Cannot read the state file {path}: {exc}") from exc
    try:
        return AgentState.from_json(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise StateFileError(f"The state file {path} is corrupt: {exc}") from exc


def save_state(path: Path, state: AgentState) -> None:
    write_atomically(Path(path), json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text` so that readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 whatever the umask, so the key is never
    # readable by others, not even for a moment.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
