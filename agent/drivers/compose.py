"""Run the target with Docker Compose.

The device's own compose file(s) describe its services; the agent owns one
override file that pins each targeted service to `image:tag@digest` (or
`image:tag` when the server names no digest) and gives it the server's stop
timeout as `stop_grace_period`. Applying a target is

    docker compose -f <base>... -f <override> pull <services>
    docker compose -f <base>... -f <override> up -d

(download-then-kill: compose replaces a container after its new image is
there). A service whose update strategy is kill-then-download is stopped
first, and one whose strategy is delete-then-download also has its container
and its old image removed before the pull:

    docker compose ... stop --timeout <seconds> <services>
    docker compose ... rm --force <services>          # delete-then-download
    docker image rm <old image>...                    # delete-then-download

Observing is `docker compose ... ps --all --quiet` followed by one
`docker inspect` of those containers.
"""

import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from itertools import groupby
from pathlib import Path

from ..model import DELETE_THEN_DOWNLOAD, DOWNLOAD_THEN_KILL, ServiceState, ServiceTarget
from ..state import write_atomically
from . import DriverError

logger = logging.getLogger(__name__)

COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
PULL_TIMEOUT_SECONDS = 30 * 60
COMMAND_TIMEOUT_SECONDS = 5 * 60

# docker's State.Status -> the contract's status.
_STATUSES = {
    "created": "installing",
    "running": "running",
    "paused": "running",
    # Between two crashes of a container with a restart policy.
    "restarting": "exited",
    "removing": "exited",
    "exited": "exited",
    "dead": "failed",
}
_HEALTHS = ("starting", "healthy", "unhealthy")
# With several replicas of one service, the worst one speaks for it.
_STATUS_RANK = ("failed", "exited", "downloading", "installing", "running")
_HEALTH_RANK = ("unhealthy", "starting", "none", "healthy")


def override_text(services: Mapping[str, ServiceTarget]) -> str:
    """The override file: YAML, with every scalar JSON-quoted so no name or
    reference can be misread by the YAML parser."""
    lines = ["# Written by the fleet agent on every target change; do not edit."]
    if not services:
        return "\n".join([*lines, "services: {}", ""])
    lines.append("services:")
    for name in sorted(services):
        lines.append(f"  {json.dumps(name)}:")
        lines.append(f"    image: {json.dumps(services[name].reference)}")
        # compose stops the old container with this grace period when `up`
        # replaces it.
        lines.append(f"    stop_grace_period: {json.dumps(f'{services[name].stop_timeout_seconds}s')}")
    return "\n".join([*lines, ""])


def container_state(container: Mapping) -> tuple[str, str]:
    """(status, health) of one `docker inspect` entry.

    Health is `none` when the image has no health check.
    """
    state = container.get("State") or {}
    status = _STATUSES.get(state.get("Status"), "failed")
    health = (state.get("Health") or {}).get("Status")
    return status, health if health in _HEALTHS else "none"


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """`repo[:tag][@digest]` -> (repo, tag, digest)."""
    name, _, digest = reference.partition("@")
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        # The colon belonged to a registry port, or there was none.
        return name, None, digest or None
    return repository, tag, digest or None


class ComposeDriver:
    def __init__(
        self,
        *,
        compose_files: Sequence[Path],
        override_file: Path,
        project_name: str | None = None,
        docker: str = "docker",
        pull_timeout: float = PULL_TIMEOUT_SECONDS,
        command_timeout: float = COMMAND_TIMEOUT_SECONDS,
    ):
        if not compose_files:
            raise ValueError("The compose driver needs at least one compose file.")
        self.override_file = Path(override_file)
        self._compose = [docker, "compose"]
        for path in [*compose_files, self.override_file]:
            self._compose += ["-f", str(path)]
        if project_name:
            self._compose += ["-p", project_name]
        self._docker = docker
        self._pull_timeout = pull_timeout
        self._command_timeout = command_timeout
        self._target: dict[str, ServiceTarget] | None = None
        # Services whose last apply failed, reported `failed` until the next one.
        self._failed: set[str] = set()

    def apply(self, services: Mapping[str, ServiceTarget]) -> None:
        self._target = dict(services)
        self._failed = set(services)
        write_atomically(self.override_file, override_text(services), mode=0o644)
        self._make_room(services)
        if services:
            self._run([*self._compose, "pull", *sorted(services)], self._pull_timeout)
        self._run([*self._compose, "up", "-d"], self._command_timeout)
        self._failed = set()

    def _make_room(self, services: Mapping[str, ServiceTarget]) -> None:
        """Stop (and for delete-then-download remove, image included) the old
        container of each service whose strategy says so, before the pull.

        Only services whose container runs another release than the target:
        what runs is asked of docker, so this holds after a restart of the
        agent and on its first apply alike.
        """
        kill_first = [n for n in services if services[n].update_strategy != DOWNLOAD_THEN_KILL]
        if not kill_first:
            return
        containers = self._containers_by_service()
        old_images = {
            name: {_image(c) for c in containers.get(name, [])} - {services[name].reference}
            for name in kill_first
        }
        swapped = sorted(name for name, images in old_images.items() if images)
        if not swapped:
            return
        by_timeout = sorted(swapped, key=lambda name: services[name].stop_timeout_seconds)
        for timeout, names in groupby(by_timeout, key=lambda n: services[n].stop_timeout_seconds):
            stop = [*self._compose, "stop", "--timeout", str(timeout), *names]
            # Docker kills the container after the timeout; give it a margin.
            self._run(stop, self._command_timeout + timeout)
        deleted = [n for n in swapped if services[n].update_strategy == DELETE_THEN_DOWNLOAD]
        if not deleted:
            return
        self._run([*self._compose, "rm", "--force", *deleted], self._command_timeout)
        images = sorted({image for name in deleted for image in old_images[name] if image})
        if images:
            try:
                self._run([self._docker, "image", "rm", *images], self._command_timeout)
            except DriverError as exc:
                # Another container may still use the image: the update goes
                # on, the disk is simply not freed.
                logger.warning("Could not remove the old image: %s", exc)

    def adopt(self, services: Mapping[str, ServiceTarget]) -> None:
        self._target = dict(services)
        self._failed = set()

    def observe(self) -> dict[str, ServiceState] | None:
        if self._target is None:
            return None
        containers = self._containers_by_service()
        return {
            name: self._service_state(target, containers.get(name, []), name in self._failed)
            for name, target in self._target.items()
        }

    def _service_state(
        self, target: ServiceTarget, containers: list[Mapping], failed: bool
    ) -> ServiceState:
        if failed or not containers:
            return ServiceState.of(target, status="failed", health="none")
        container = min(containers, key=_severity)
        status, health = container_state(container)
        image = (container.get("Config") or {}).get("Image") or ""
        if image == target.reference:
            return ServiceState.of(target, status=status, health=health)
        # Still the old container, e.g. after `up` failed half way.
        repository, tag, digest = split_reference(image)
        return ServiceState(repository or None, tag, digest, status=status, health=health)

    def _containers_by_service(self) -> dict[str, list[Mapping]]:
        ps = self._run([*self._compose, "ps", "--all", "--quiet"], self._command_timeout)
        ids = ps.split()
        if not ids:
            return {}
        output = self._run([self._docker, "inspect", *ids], self._command_timeout)
        try:
            inspected = json.loads(output)
        except ValueError as exc:
            raise DriverError(f"docker inspect printed something that is not JSON: {exc}") from exc
        by_service: dict[str, list[Mapping]] = {}
        for container in inspected if isinstance(inspected, list) else []:
            labels = (container.get("Config") or {}).get("Labels") or {}
            service = labels.get(COMPOSE_SERVICE_LABEL)
            if service:
                by_service.setdefault(service, []).append(container)
        return by_service

    def _run(self, args: list[str], timeout: float) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError as exc:
            raise DriverError(f"{args[0]!r} is not installed or not on PATH.") from exc
        except subprocess.TimeoutExpired as exc:
            raise DriverError(f"{' '.join(args)} took longer than {timeout:g}s.") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-2000:]
            raise DriverError(f"{' '.join(args)} exited with {done.returncode}: {tail}")
        return done.stdout


def _image(container: Mapping) -> str:
    return (container.get("Config") or {}).get("Image") or ""


def _severity(container: Mapping) -> tuple[int, int]:
    status, health = container_state(container)
    return _STATUS_RANK.index(status), _HEALTH_RANK.index(health)
