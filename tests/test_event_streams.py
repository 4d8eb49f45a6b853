"""Event streams in-process: the committed-order cursor under concurrent
writers, and the answers that are not a stream (bad filters, unknown
rollouts, every slot taken). The streams themselves are read over real HTTP
in test_procfile.py and test_bin_run.py."""

import threading
import uuid

import httpx

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from rollouts.models import EventType, RolloutEvent
from rollouts.services.events import event_record
from rollouts.streams import cursor as cursor_module
from rollouts.streams import hub as hub_module
from rollouts.streams import views
from rollouts.streams.cursor import CommittedEventCursor

from devices.models import FleetMembership, Role

from .concurrency import join, start
from .factories import operator
from .sse import StreamReader
from .rollout_helpers import IMAGE, build_fleet, create_rollout, policy


def _event(rollout) -> RolloutEvent:
    return event_record(
        rollout=rollout, event_type=EventType.ROLLOUT_PAUSED, message="m", now=timezone.now()
    )


def _hold_an_event_open(rollout, inserted: threading.Event, release: threading.Event, commit: bool):
    """In another connection: insert an event, wait, then commit or roll back."""

    def run():
        with transaction.atomic():
            _event(rollout)
            inserted.set()
            release.wait(30)
            if not commit:
                transaction.set_rollback(True)

    return run


@pytest.fixture
def rollout(transactional_db):
    build_fleet(1)
    policy()
    return create_rollout()


@pytest.mark.parametrize("commit", [True, False], ids=["commits", "rolls-back"])
def test_it_never_passes_an_event_that_may_still_commit(rollout, monkeypatch, commit):
    monkeypatch.setattr(cursor_module, "GAP_MIN_AGE_SECONDS", 0)
    cursor = CommittedEventCursor.at_latest()
    inserted, release, errors = threading.Event(), threading.Event(), []
    writer = start(_hold_an_event_open(rollout, inserted, release, commit), errors)
    assert inserted.wait(10)
    later = _event(rollout)  # a higher id, committed first

    assert cursor.advance()[1] < later.id
    assert cursor.waiting_for_gap
    release.set()
    join([writer], errors)
    after, up_to = cursor.advance()
    assert up_to == later.id
    ids = list(RolloutEvent.objects.filter(id__gt=after, id__lte=up_to).values_list("id", flat=True))
    assert later.id in ids and len(ids) == (2 if commit else 1)
    assert not cursor.waiting_for_gap


def _hub_at(position: int) -> hub_module.EventHub:
    """A process's hub as its listener leaves it, without the thread."""
    hub = hub_module.EventHub()
    hub._cursor = CommittedEventCursor(position=position)
    hub._position = hub._floor = position
    return hub


def test_a_stream_looking_while_the_hub_reads_never_moves_past_the_events_read(rollout, monkeypatch):
    hub = _hub_at(_event(rollout).id)
    missed = [_event(rollout).id, _event(rollout).id]
    looked = []
    real_read = hub_module.read_events

    def read_while_a_stream_looks(events, after, up_to, limit=None):
        # A client reconnects with Last-Event-ID just as the hub reads.
        looked.append(hub.window_after(missed[0] - 1))
        return real_read(events, after, up_to, limit)

    monkeypatch.setattr(hub_module, "read_events", read_while_a_stream_looks)
    hub._read()
    # Nothing was published yet: the stream stays where it was...
    assert looked == [([], missed[0] - 1)]
    # ... and gets both events once they are.
    rows, position = hub.window_after(missed[0] - 1)
    assert [row["id"] for row in rows] == missed and position == missed[-1]


def test_a_failed_hub_read_is_read_again(rollout, monkeypatch):
    hub = _hub_at(_event(rollout).id)
    missed = _event(rollout).id
    real_read = hub_module.read_events

    def fail_once(events, after, up_to, limit=None):
        monkeypatch.setattr(hub_module, "read_events", real_read)
        raise OperationalError("the database went away")

    monkeypatch.setattr(hub_module, "read_events", fail_once)
    hub._read()
    assert hub.position == missed - 1
    hub._read()
    rows, position = hub.window_after(missed - 1)
    assert [row["id"] for row in rows] == [missed] and position == missed


def test_it_starts_live_streams_after_the_newest_event(rollout):
    newest = _event(rollout)
    assert CommittedEventCursor.at_latest().position == newest.id


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, field",
    [("types=image.rollout_paused,image.nonsense", "types"), ("rollout=not-a-uuid", "rollout"),
     ("last_event_id=-1", "last_event_id")],
)
def test_it_answers_400_to_bad_filters(admin_api, query, field):
    response = admin_api.get(f"/api/v1/events/stream?{query}", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["fields"]


@pytest.mark.django_db
def test_it_answers_400_to_a_last_event_id_that_is_not_an_id(admin_api):
    response = admin_api.get("/api/v1/events/stream", HTTP_LAST_EVENT_ID="abc")
    assert response.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("rollout_id", ["00000000-0000-0000-0000-000000000000", "nope"])
def test_it_answers_404_for_an_unknown_rollout(admin_api, rollout_id):
    response = admin_api.get(f"/api/v1/rollouts/{rollout_id}/stream")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.django_db
def test_it_answers_503_when_every_stream_slot_is_taken(admin_api, monkeypatch):
    monkeypatch.setattr(views, "_slots", threading.BoundedSemaphore(1))
    views._slots.acquire()
    response = admin_api.get("/api/v1/events/stream", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 503
    assert response.json()["error"] == "streams_busy"


@pytest.mark.django_db
def test_it_describes_both_streams_in_the_schema(admin_api):
    paths = admin_api.get("/api/schema/?format=json").json()["paths"]
    for path in ("/api/v1/events/stream", "/api/v1/rollouts/{id}/stream"):
        content = paths[path]["get"]["responses"]["200"]["content"]
        assert list(content) == ["text/event-stream"], path


def _rollout_of_fleet(fleet, status: str):
    """A rollout that touches `fleet` (through its policy's fleet)."""
    rollout = create_rollout()
    rollout.pk, rollout.fleet, rollout.status = uuid.uuid4(), fleet, status
    rollout.save(force_insert=True)
    return rollout


@pytest.fixture
def stopped_hub_afterwards():
    """The live server runs in this process: stop its hub's reader thread
    afterwards, so it does not read the database during later tests."""
    from rollouts.streams.hub import hub

    yield
    listener = hub._listener
    hub.stop()
    if listener is not None:
        listener.join(15)
    hub.__init__()


@pytest.mark.django_db(transaction=True)
def test_a_fleet_member_streams_only_rollouts_touching_their_fleets(live_server, stopped_hub_afterwards):
    theirs_fleet, other_fleet = build_fleet(1), build_fleet(1)
    policy()
    theirs = _rollout_of_fleet(theirs_fleet, "cancelled")
    other = _rollout_of_fleet(other_fleet, "completed")
    member, key = operator(username="member")
    FleetMembership.objects.create(user=member, fleet=theirs_fleet, role=Role.VIEWER)
    for rollout in (theirs, other, theirs):
        _event(rollout)
    headers = {"Authorization": f"Token {key}"}

    stream = StreamReader(f"{live_server.url}/api/v1/events/stream?last_event_id=0", headers)
    try:
        assert stream.status_code == 200
        seen = [message.data["rollout_id"] for message in stream.quiet_for(3)]
    finally:
        stream.close()
    # (The rollouts create_rollout made first touch both fleets: not asserted.)
    assert seen.count(str(theirs.pk)) == 2
    assert str(other.pk) not in seen
    hidden = httpx.get(f"{live_server.url}/api/v1/rollouts/{other.pk}/stream", headers=headers, timeout=30)
    assert hidden.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_member_streams_only_their_own_devices_events_of_a_rollout_spanning_two_fleets(
    live_server, stopped_hub_afterwards
):
    from rest_framework.authtoken.models import Token

    from .access_world import build_world

    world = build_world()
    key = Token.objects.create(user=world.users["viewer"]).key
    url = f"{live_server.url}/api/v1/rollouts/{world.rollout_both.pk}/stream?last_event_id=0"
    stream = StreamReader(url, {"Authorization": f"Token {key}"})
    try:
        assert stream.status_code == 200
        seen = {message.data["device_uuid"] for message in stream.quiet_for(3)}
    finally:
        stream.close()
    # The rollout-level event and Berlin's device event; not Tokyo's.
    assert seen == {None, str(world.device_berlin.uuid)}
