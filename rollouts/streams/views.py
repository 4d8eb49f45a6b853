"""GET /api/v1/events/stream and GET /api/v1/rollouts/{id}/stream.

A stream replays the events after `Last-Event-ID` (from the hub's window in
memory, or the database), then sends new ones as they commit, with a comment line at least every
EVENT_STREAM_KEEPALIVE_SECONDS. It runs in one of the web process's stream threads
(fleet/serving.py): when they are all taken it answers 503 at once, so a
stream never waits for, or takes, a thread that device polls need.
"""

import threading
import time
import uuid as uuid_lib
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, negotiation, renderers, serializers
from rest_framework.views import APIView

from devices import access as fleet_access
from devices.references import InvalidReference, normalize_repository
from fleet.serving import STREAMS_PER_PROCESS

from .. import access
from ..models import EventType, Rollout, RolloutEvent
from .hub import hub, read_events, sse_message

# Events per database read of a replay; a long one goes in several reads.
READ_CHUNK = 500
# Clients wait this long before reconnecting (the SSE `retry:` field).
RECONNECT_MILLISECONDS = 2000

_slots = threading.BoundedSemaphore(STREAMS_PER_PROCESS)


class StreamsBusy(exceptions.APIException):
    status_code = 503
    default_code = "streams_busy"
    default_detail = "This server holds as many event streams as it may; retry shortly."


class JSONErrorsOnly(negotiation.BaseContentNegotiation):
    """EventSource sends `Accept: text/event-stream`: errors (401, 403, 404,
    400, 503) are JSON whatever the client accepts; the stream itself is not
    rendered by DRF."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class StreamFilters(serializers.Serializer):
    rollout = serializers.UUIDField(required=False)
    image = serializers.CharField(required=False, max_length=255)
    types = serializers.CharField(required=False, max_length=2000)
    last_event_id = serializers.IntegerField(required=False, min_value=0)

    def validate_image(self, value):
        try:
            return normalize_repository(value)
        except InvalidReference as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate_types(self, value):
        types = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(types) - set(EventType.values))
        if unknown:
            raise serializers.ValidationError(f"Unknown event types: {', '.join(unknown)}.")
        return types


STREAM_PARAMETERS = [
    OpenApiParameter(
        "types",
        {"type": "array", "items": {"type": "string", "enum": EventType.values}},
        style="form",
        explode=False,
        description="Comma-separated event types to send.",
    ),
    OpenApiParameter(
        "last_event_id", int, description="Resume after this event id (or the Last-Event-ID header)."
    ),
]
STREAM_RESPONSES = {
    (200, "text/event-stream"): OpenApiResponse(
        # One Server-Sent Event: its fields as the client's parser reads them.
        {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "event": {"type": "string", "enum": EventType.values},
                "data": {"type": "string", "contentMediaType": "application/json"},
            },
            "required": ["id", "event", "data"],
        },
        description="Server-Sent Events: `id: <event id>`, `event: <event_type>`, "
        "`data: <event JSON with rollout_id>`; a comment line at least every 15 s.",
    ),
    503: OpenApiResponse(description="Every stream slot of this server is taken."),
}


class EventStreamView(APIView):
    # view_rollout on a GET, or a fleet membership (then scoped below).
    queryset = Rollout.objects.all()
    permission_classes = [fleet_access.FleetScopedPermission]
    renderer_classes = [renderers.JSONRenderer]
    content_negotiation_class = JSONErrorsOnly

    @extend_schema(
        operation_id="events_stream",
        parameters=[
            OpenApiParameter("rollout", OpenApiTypes.UUID, description="Only this rollout's events."),
            OpenApiParameter("image", str, description="Only events of rollouts of this image."),
            *STREAM_PARAMETERS,
        ],
        responses=STREAM_RESPONSES,
    )
    def get(self, request, pk=None):
        filters = self.read_filters(request)
        if pk is not None:
            filters["rollout"] = self.visible_rollout(pk).pk
        return open_stream(
            self.scoped_events(filters),
            self.resume_position(request, filters),
            scoped=not fleet_access.has_model_perm(request.user, access.VIEW_ROLLOUT),
            matches=_matcher(filters),
        )

    def read_filters(self, request) -> dict:
        # An empty text filter (`?image=`) filters nothing, as on the lists.
        given = {
            name: value
            for name, value in request.query_params.dict().items()
            if value or name not in ("image", "types")
        }
        reader = StreamFilters(data=given)
        reader.is_valid(raise_exception=True)
        return reader.validated_data

    def visible_rollout(self, pk) -> Rollout:
        """404 for a rollout outside the user's fleets, as for a missing one."""
        rollouts = access.visible_rollouts(Rollout.objects.all(), self.request.user)
        try:
            return rollouts.only("pk").get(pk=uuid_lib.UUID(str(pk)))
        except (ValueError, Rollout.DoesNotExist) as exc:
            raise exceptions.NotFound("No such rollout.") from exc

    def scoped_events(self, filters: dict):
        """A member sees the events of rollouts touching their fleets (device
        events only of their own devices); a subquery, evaluated per read."""
        user = self.request.user
        events = access.visible_events(RolloutEvent.objects.all(), user)
        if not fleet_access.has_model_perm(user, access.VIEW_ROLLOUT):
            events = events.filter(rollout__in=access.visible_rollouts(Rollout.objects.all(), user))
        if "rollout" in filters:
            events = events.filter(rollout_id=filters["rollout"])
        if "image" in filters:
            events = events.filter(rollout__image=filters["image"])
        if filters.get("types"):
            events = events.filter(event_type__in=filters["types"])
        return events

    def resume_position(self, request, filters: dict) -> int | None:
        header = request.headers.get("Last-Event-ID", "").strip()
        if header:
            if not header.isdigit():
                raise exceptions.ValidationError({"Last-Event-ID": "Must be an event id."})
            return int(header)
        return filters.get("last_event_id")


def _matcher(filters: dict):
    """The filters as a test on a hub row (the same as scoped_events's)."""
    rollout, image = filters.get("rollout"), filters.get("image")
    types = set(filters.get("types") or ())

    def matches(row: dict) -> bool:
        return (
            (rollout is None or row["rollout_id"] == rollout)
            and (image is None or row["image"] == image)
            and (not types or row["event_type"] in types)
        )

    return matches


class RolloutStreamView(EventStreamView):
    @extend_schema(operation_id="rollouts_stream", parameters=STREAM_PARAMETERS, responses=STREAM_RESPONSES)
    def get(self, request, pk=None):
        return super().get(request, pk=pk)


def open_stream(events, resume_after: int | None, *, scoped: bool, matches) -> StreamingHttpResponse:
    if not _slots.acquire(blocking=False):
        raise StreamsBusy()
    try:
        hub.start()
        # A new client starts after the newest event; a returning one after
        # the last it saw.
        position = resume_after if resume_after is not None else _newest_event_id()
    except BaseException:
        _slots.release()
        raise
    finally:
        # The stream's thread holds no connection while it waits.
        connection.close()
    stream = _EventStream(events, position, scoped=scoped, matches=matches)
    response = StreamingHttpResponse(_released_after(stream.messages()), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # nginx and similar proxies would otherwise buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


def _newest_event_id() -> int:
    return RolloutEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _released_after(messages: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from messages
    finally:
        _slots.release()


class _EventStream:
    """One client's position in the event log. New events come from the
    process's hub (in memory); the database is read only for a replay older
    than the hub's window, or when the client's view is scoped to its fleets
    (then each read is one scoped query, never past the hub's position)."""

    def __init__(self, events, position: int, *, scoped: bool, matches):
        self.events = events
        self.position = position
        self.scoped = scoped
        self.matches = matches

    def messages(self) -> Iterator[bytes]:
        yield f"retry: {RECONNECT_MILLISECONDS}\n: connected\n\n".encode()
        generation = hub.generation
        last_write = time.monotonic()
        while not hub.stopping:
            for message in self._caught_up():
                yield message
                last_write = time.monotonic()
            idle = time.monotonic() - last_write
            if idle >= settings.EVENT_STREAM_KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                last_write, idle = time.monotonic(), 0.0
            generation = hub.wait(generation, settings.EVENT_STREAM_KEEPALIVE_SECONDS - idle)

    def _caught_up(self) -> Iterator[bytes]:
        """Every event after the position, up to the hub's, in id order."""
        while self.position < hub.position:
            cached = None if self.scoped else hub.window_after(self.position)
            if cached is not None:
                rows, self.position = cached
                yield from (row["sse"] for row in rows if self.matches(row))
                continue
            up_to = hub.position
            rows = read_events(self.events, self.position, up_to, limit=READ_CHUNK)
            self.position = rows[-1]["id"] if len(rows) == READ_CHUNK else up_to
            yield from (sse_message(row) for row in rows)
