"""A Server-Sent Events client for tests: reads a stream over real HTTP in a
thread and timestamps each message as it arrives."""

import json
import queue
import threading
import time
from dataclasses import dataclass

import httpx


@dataclass
class Message:
    id: int | None
    event: str | None
    data: dict | None
    comment: str | None
    received_at: float


class StreamReader:
    def __init__(self, url: str, headers: dict[str, str]):
        self.messages: queue.Queue[Message] = queue.Queue()
        self.status_code: int | None = None
        self._opened = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=60.0))
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self._thread.start()
        assert self._opened.wait(30), f"{url} did not answer"

    def _read(self, url, headers):
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self.status_code = response.status_code
                self.content_type = response.headers.get("content-type", "")
                self._opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line == "":
                        if fields:
                            self.messages.put(_message(fields))
                        fields = {}
                    elif line.startswith(":"):
                        self.messages.put(Message(None, None, None, line[1:].strip(), time.monotonic()))
                    else:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
        except (httpx.HTTPError, RuntimeError):
            if not self._closed:
                raise
        finally:
            self._opened.set()

    def next_event(self, timeout: float = 10) -> Message:
        """The next message that is an event (comments skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(deadline - time.monotonic(), 0.001))
            if message.event is not None:
                return message

    def events(self, count: int, timeout: float = 10) -> list[Message]:
        return [self.next_event(timeout) for _ in range(count)]

    def next_comment(self, timeout: float = 10) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(deadline - time.monotonic(), 0.001))
            if message.comment is not None:
                return message

    def quiet_for(self, seconds: float) -> list[Message]:
        """Events that arrive within `seconds` (expected: none)."""
        deadline = time.monotonic() + seconds
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if message.event is not None:
                seen.append(message)
        return seen

    def close(self):
        self._closed = True
        self._client.close()
        self._thread.join(10)


def _message(fields: dict[str, str]) -> Message:
    return Message(
        id=int(fields["id"]) if "id" in fields else None,
        event=fields.get("event"),
        data=json.loads(fields["data"]) if "data" in fields else None,
        comment=None,
        received_at=time.monotonic(),
    )
