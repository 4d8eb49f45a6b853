"""HTTP client for the control plane's device agent endpoints (poll, report, register)."""

import collections
import datetime
import email.utils
import time
from dataclasses import dataclass
from typing import Any

import httpx

from . import __version__
from .model import InvalidTarget, ServiceState, Target

DEFAULT_TIMEOUT_SECONDS = 15.0


class ClientError(Exception):
    """A request did not get the answer the agent needs.

    `status` is None for network failures. `retry_after` is the server's
    Retry-After in seconds, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.error = error
        self.retry_after = retry_after


class ServerUnavailable(ClientError):
    """Network failure, timeout, 5xx or 429: worth retrying as is."""


class Unauthorized(ClientError):
    """401: the key was refused. Retrying will not help until someone acts."""


class NotFound(ClientError):
    """404: the key belongs to another device, or the device was deleted."""


class Conflict(ClientError):
    """409 on register: a device with this uuid already exists."""


class Rejected(ClientError):
    """Any other 4xx: the server refused what the agent sent."""


@dataclass(frozen=True)
class Registration:
    uuid: str
    api_key: str
    fleet: str


@dataclass(frozen=True)
class PollResult:
    """A 200 carries a target; a 304 means the last target still holds."""

    status: int
    etag: str | None
    target: Target | None


class AgentClient:
    """One HTTP connection pool to the server, with a short history.

    `history` keeps `(method, status)` of the last requests (status None for
    a network failure), for logs and tests; it is bounded so a device that
    runs for months does not grow it.
    """

    def __init__(
        self,
        server: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
        history_size: int = 1000,
    ):
        self._http = httpx.Client(
            base_url=server.rstrip("/") + "/api/v1",
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": f"fleet-agent/{__version__}", "Accept": "application/json"},
        )
        self.history: collections.deque[tuple[str, int | None]] = collections.deque(
            maxlen=history_size
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def register(
        self,
        *,
        provisioning_key: str,
        uuid: str | None = None,
        name: str = "",
        tags: list[str] | tuple[str, ...] = (),
    ) -> Registration:
        body: dict[str, Any] = {"name": name, "tags": list(tags)}
        if uuid:
            body["uuid"] = uuid
        response = self._send("POST", "/device/register", provisioning_key, json=body)
        data = _json_object(response)
        try:
            return Registration(uuid=data["uuid"], api_key=data["api_key"], fleet=data["fleet"])
        except KeyError as exc:
            raise ServerUnavailable(f"The register answer lacks {exc}.", status=201) from exc

    def poll(self, *, uuid: str, api_key: str, etag: str | None = None) -> PollResult:
        headers = {"If-None-Match": etag} if etag else {}
        response = self._send("GET", f"/device/{uuid}/state", api_key, headers=headers)
        if response.status_code == 304:
            return PollResult(status=304, etag=response.headers.get("ETag", etag), target=None)
        try:
            target = Target.from_json(_json_object(response))
        except InvalidTarget as exc:
            raise ServerUnavailable(f"Unusable target state: {exc}", status=200) from exc
        return PollResult(status=200, etag=response.headers.get("ETag"), target=target)

    def report(
        self,
        *,
        uuid: str,
        api_key: str,
        target_version: int | None,
        services: dict[str, ServiceState],
    ) -> None:
        body = {
            "target_version": target_version,
            "services": {name: state.to_json() for name, state in services.items()},
        }
        self._send("PATCH", f"/device/{uuid}/state", api_key, json=body)

    def _send(self, method: str, path: str, key: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            self.history.append((method, None))
            raise ServerUnavailable(f"{method} {path} failed: {exc!r}") from exc
        self.history.append((method, response.status_code))
        if response.status_code < 400:
            return response
        raise _error_for(method, path, response)


def _error_for(method: str, path: str, response: httpx.Response) -> ClientError:
    status = response.status_code
    error, detail = _error_body(response)
    message = f"{method} {path} answered {status}: {detail or response.reason_phrase}"
    kind = {401: Unauthorized, 404: NotFound, 409: Conflict}.get(status)
    if kind is None:
        kind = ServerUnavailable if status >= 500 or status == 429 else Rejected
    return kind(
        message,
        status=status,
        error=error,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def _error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    try:
        data = response.json()
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    return data.get("error"), data.get("detail")


def _json_object(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError as exc:
        raise ServerUnavailable(
            f"The server answered {response.status_code} without JSON.",
            status=response.status_code,
        ) from exc
    if not isinstance(data, dict):
        raise ServerUnavailable("The server answered JSON that is not an object.")
    return data


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)
