"""Poll interval jitter and exponential backoff, on the fake clock.

The server's failures (503, 429) come from an httpx MockTransport: they stand
for a remote server in trouble, which this machine cannot produce on demand.
"""

import json
import random

import httpx
import pytest

from agent.client import parse_retry_after
from agent.loop import Backoff, jittered
from agent.state import AgentState, save_state

UUID = "5b0e4c1e-1111-4f4f-8888-000000000001"
TARGET = {"uuid": UUID, "target_version": 1, "services": {}, "poll_interval_seconds": 60}


class ScriptedServer:
    """Answers GETs from a script of statuses, PATCHes with 200."""

    def __init__(self, statuses: list[int], headers: dict[str, str] | None = None):
        self.statuses = list(statuses)
        self.headers = headers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            return httpx.Response(200, json={"accepted": True, "target_version": 1})
        status = self.statuses.pop(0)
        if status == 200:
            return httpx.Response(200, json=TARGET, headers={"ETag": '"1.60"'})
        body = {"error": "unavailable", "detail": "Try later."}
        return httpx.Response(status, json=body, headers=self.headers)


@pytest.fixture
def registered(tmp_path):
    path = tmp_path / "state.json"
    save_state(path, AgentState(uuid=UUID, api_key="device-key"))
    return path


def scripted_agent(make_agent, state_file, server, backoff):
    return make_agent(
        "http://fleet.test",
        state_file=state_file,
        transport=httpx.MockTransport(server),
        backoff=backoff,
    )


def test_it_backs_off_exponentially_up_to_the_cap():
    backoff = Backoff(base=1, cap=20)

    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 20, 20]


def test_it_starts_again_from_the_base_after_a_reset():
    backoff = Backoff(base=2, cap=60)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()

    assert backoff.next_delay() == 2


def test_it_does_not_overflow_after_weeks_of_failures():
    backoff = Backoff(base=1, cap=300, failures=10_000)

    assert backoff.next_delay() == 300


def test_it_jitters_within_ten_percent_and_spreads_over_the_whole_range():
    rng = random.Random(1)
    samples = [jittered(60, rng) for _ in range(2000)]

    assert 54 <= min(samples) < 55 and 65 < max(samples) <= 66


def test_it_waits_longer_after_each_failure_and_polls_normally_after_success(
    make_agent, registered
):
    server = ScriptedServer([503, 503, 500, 503, 503, 503, 200, 503])
    agent = scripted_agent(make_agent, registered, server, Backoff(base=1, cap=10))

    delays = [agent.step() for _ in range(8)]

    expected = [1, 2, 4, 8, 10, 10, 60, 1]
    assert all(0.9 * e <= d <= 1.1 * e for d, e in zip(delays[:7], expected[:7]))
    assert max(delays[:6]) <= 10  # the cap holds after jitter too
    assert 0.9 <= delays[7] <= 1.1  # reset by the success
    assert [s for _, s in agent.client.history if s != 200] == [503, 503, 500, 503, 503, 503, 503]


def test_it_honours_retry_after(make_agent, registered):
    server = ScriptedServer([429], headers={"Retry-After": "30"})
    agent = scripted_agent(make_agent, registered, server, Backoff(base=1, cap=300))

    assert agent.step() == 30


def test_it_backs_off_when_the_server_cannot_be_reached(make_agent, registered):
    # Nothing listens on port 1: a real connection refusal.
    agent = make_agent("http://127.0.0.1:1", state_file=registered, backoff=Backoff(base=3))

    delays = [agent.step(), agent.step()]

    assert 2.7 <= delays[0] <= 3.3 and 5.4 <= delays[1] <= 6.6
    assert list(agent.client.history) == [("GET", None), ("GET", None)]


def test_it_reads_retry_after_as_seconds_or_as_a_date():
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10
    assert parse_retry_after("soon") is None


def test_it_sends_the_etag_it_got_and_counts_a_304_as_success(make_agent, registered):
    seen = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("If-None-Match"))
        if request.method == "PATCH":
            return httpx.Response(200, json={"accepted": True, "target_version": 1})
        if request.headers.get("If-None-Match") == '"1.60"':
            return httpx.Response(304, headers={"ETag": '"1.60"'})
        return httpx.Response(200, content=json.dumps(TARGET), headers={"ETag": '"1.60"'})

    agent = scripted_agent(make_agent, registered, server, Backoff())
    delays = [agent.step(), agent.step()]

    assert [s for _, s in agent.client.history] == [200, 200, 304]
    assert seen == [None, None, '"1.60"']
    assert all(54 <= d <= 66 for d in delays)
