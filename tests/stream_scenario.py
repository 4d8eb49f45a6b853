"""What an operator watching a rollout sees, over real HTTP against a running
control plane (the Procfile's processes, or bin/run): shared by the tests of
both ways of running it."""

import time
import uuid
from dataclasses import dataclass

import httpx

from .sse import StreamReader

# The contract: an event reaches connected clients within 2 s of its commit.
LATENCY_LIMIT_SECONDS = 2.0


class Operator:
    def __init__(self, base_url: str, token: str):
        self.base_url = base_url
        self.headers = {"Authorization": f"Token {token}"}
        self.http = httpx.Client(base_url=base_url, headers=self.headers, timeout=30)

    def post(self, path: str, body: dict | None = None) -> dict:
        response = self.http.post(path, json=body or {})
        assert response.status_code in (200, 201), (path, response.status_code, response.text)
        return response.json()

    def get(self, path: str) -> dict:
        response = self.http.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    def stream(self, path: str, **headers: str) -> StreamReader:
        reader = StreamReader(self.base_url + path, {**self.headers, **headers})
        assert reader.status_code == 200, reader.status_code
        assert reader.content_type.startswith("text/event-stream")
        return reader

    def timed_action(self, rollout_id: str, action: str) -> float:
        """The action, and when its answer came (the commit happened before)."""
        self.post(f"/api/v1/rollouts/{rollout_id}/{action}")
        return time.monotonic()

    def events_after(self, rollout_id: str, event_id: int) -> list[dict]:
        events = self.get(f"/api/v1/rollouts/{rollout_id}/events/?page_size=1000")["results"]
        return sorted((e for e in events if e["id"] > event_id), key=lambda e: e["id"])


@dataclass
class OneDeviceRollout:
    rollout_id: str
    image: str
    device_uuid: str
    device_key: str


def one_device_rollout(operator: Operator, *, tag: str = "v2") -> OneDeviceRollout:
    """A manual-strategy rollout of one device, started: it is in progress and
    can be paused and resumed at will."""
    name = f"app{uuid.uuid4().hex[:8]}"
    image = f"docker.io/acme/{name}"
    fleet = operator.post("/api/v1/fleets/", {"name": name, "slug": name})
    device = operator.post(
        "/api/v1/devices/",
        {"name": name, "fleet": fleet["slug"], "services": {"web": {"image": image, "tag": "v1"}}},
    )
    operator.post(
        "/api/v1/image-policies/",
        {
            "image_pattern": f"{image}:*",
            "update_strategy": "manual",
            "batch_percentages": [100],
            "health_check_timeout_seconds": 3600,
        },
    )
    rollout = operator.post("/api/v1/rollouts/", {"image": image, "tag": tag})
    deadline = time.monotonic() + 60
    # The fan-out runs in the worker process.
    while operator.get(f"/api/v1/rollouts/{rollout['id']}/")["total_devices"] != 1:
        assert time.monotonic() < deadline, "the worker never fanned the rollout out"
        time.sleep(0.2)
    operator.post(f"/api/v1/rollouts/{rollout['id']}/start")
    return OneDeviceRollout(rollout["id"], image, device["uuid"], device["api_key"])


def check_streams(operator: Operator, *, forbidden_token: str) -> None:
    rollout = one_device_rollout(operator)
    rollout_id = rollout.rollout_id
    _check_auth(operator, rollout_id, forbidden_token)
    last_id = _check_live_events_arrive_in_time(operator, rollout_id)
    _check_reconnect_replays_exactly_the_missed_events(operator, rollout_id, last_id)
    _check_types_filter(operator, rollout_id)
    _check_image_filter(operator, rollout)


def _check_auth(operator: Operator, rollout_id: str, forbidden_token: str) -> None:
    for path in ("/api/v1/events/stream", f"/api/v1/rollouts/{rollout_id}/stream"):
        anonymous = httpx.get(operator.base_url + path, timeout=30)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.json()["error"] == "not_authenticated"
        forbidden = httpx.get(
            operator.base_url + path,
            headers={"Authorization": f"Token {forbidden_token}", "Accept": "text/event-stream"},
            timeout=30,
        )
        assert forbidden.status_code == 403, forbidden.text
        assert forbidden.json()["error"] == "permission_denied"


def _check_live_events_arrive_in_time(operator: Operator, rollout_id: str) -> int:
    stream = operator.stream(f"/api/v1/rollouts/{rollout_id}/stream")
    try:
        answered = operator.timed_action(rollout_id, "pause")
        paused = stream.next_event()
        assert paused.event == "image.rollout_paused"
        assert paused.data["rollout_id"] == rollout_id
        assert paused.data["id"] == paused.id
        assert paused.received_at - answered < LATENCY_LIMIT_SECONDS
        return paused.id
    finally:
        stream.close()


def _check_reconnect_replays_exactly_the_missed_events(
    operator: Operator, rollout_id: str, last_id: int
) -> None:
    # Disconnected: two actions happen meanwhile.
    operator.post(f"/api/v1/rollouts/{rollout_id}/resume")
    operator.post(f"/api/v1/rollouts/{rollout_id}/pause")
    missed = operator.events_after(rollout_id, last_id)
    assert [e["event_type"] for e in missed] == ["image.rollout_resumed", "image.rollout_paused"]

    stream = operator.stream(f"/api/v1/rollouts/{rollout_id}/stream", **{"Last-Event-ID": str(last_id)})
    try:
        replayed = stream.events(len(missed))
        assert [m.id for m in replayed] == [e["id"] for e in missed]
        assert [m.data for m in replayed] == [{**e, "rollout_id": rollout_id} for e in missed]
        # Then live again, and nothing more of the past.
        answered = operator.timed_action(rollout_id, "resume")
        live = stream.next_event()
        assert (live.event, live.id > replayed[-1].id) == ("image.rollout_resumed", True)
        assert live.received_at - answered < LATENCY_LIMIT_SECONDS
    finally:
        stream.close()
    # The query parameter spelling resumes the same way.
    stream = operator.stream(f"/api/v1/rollouts/{rollout_id}/stream?last_event_id={last_id}")
    try:
        assert [m.id for m in stream.events(3)] == [*(e["id"] for e in missed), live.id]
    finally:
        stream.close()


def _check_types_filter(operator: Operator, rollout_id: str) -> None:
    stream = operator.stream(f"/api/v1/events/stream?types=image.rollout_paused&rollout={rollout_id}")
    try:
        operator.post(f"/api/v1/rollouts/{rollout_id}/pause")
        operator.post(f"/api/v1/rollouts/{rollout_id}/resume")
        operator.post(f"/api/v1/rollouts/{rollout_id}/pause")
        first, second = stream.events(2)
        assert (first.event, second.event) == ("image.rollout_paused", "image.rollout_paused")
        assert stream.quiet_for(1.5) == []
        # The stacks under test send keep-alives every 4 s: longer than the
        # latency limit, so a stream that only looked on keep-alives would fail.
        assert stream.next_comment(timeout=10).comment == "keep-alive"
    finally:
        stream.close()


def _check_image_filter(operator: Operator, rollout: OneDeviceRollout) -> None:
    # Left paused by the checks before; a second rollout, of another image,
    # is in progress.
    other = one_device_rollout(operator)
    assert other.image != rollout.image
    stream = operator.stream(f"/api/v1/events/stream?image={rollout.image}")
    try:
        operator.post(f"/api/v1/rollouts/{other.rollout_id}/pause")
        operator.post(f"/api/v1/rollouts/{rollout.rollout_id}/resume")
        first = stream.next_event()
        assert (first.event, first.data["rollout_id"]) == ("image.rollout_resumed", rollout.rollout_id)
        assert stream.quiet_for(1.5) == []
    finally:
        stream.close()
