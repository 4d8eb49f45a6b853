"""GET /api/v1/events/stream and GET /api/v1/rollouts/{id}/stream.

A stream replays the events after `Last-Event-ID` from the database, then
sends new ones as they commit, with a comment line at least every
EVENT_STREAM_KEEPALIVE_SECONDS. It runs in one of the web process's stream threads
(fleet/serving.py): when they are all taken it answers 503 at once, so a
stream never waits for, or takes, a thread that device polls need.
"""

import json
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
from ..serializers import RolloutEventSerializer
from .cursor import CommittedEventCursor
from .wakeup import hub

# While a missing id may still commit, look again this often.
GAP_RECHECK_SECONDS = 0.25
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
    OpenApiParameter("types", str, description="Comma-separated event types to send."),
    OpenApiParameter(
        "last_event_id", int, description="Resume after this event id (or the Last-Event-ID header)."
    ),
]
STREAM_RESPONSES = {
    (200, "text/event-stream"): OpenApiResponse(
        OpenApiTypes.STR,
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
        return open_stream(self.scoped_events(filters), self.resume_position(request, filters))

    def read_filters(self, request) -> dict:
        reader = StreamFilters(data=request.query_params.dict())
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


class RolloutStreamView(EventStreamView):
    @extend_schema(operation_id="rollouts_stream", parameters=STREAM_PARAMETERS, responses=STREAM_RESPONSES)
    def get(self, request, pk=None):
        return super().get(request, pk=pk)


def open_stream(events, resume_after: int | None) -> StreamingHttpResponse:
    if not _slots.acquire(blocking=False):
        raise StreamsBusy()
    try:
        cursor = (
            CommittedEventCursor(position=resume_after)
            if resume_after is not None
            else CommittedEventCursor.at_latest()
        )
    except BaseException:
        _slots.release()
        raise
    finally:
        # The stream's thread holds no connection while it waits.
        connection.close()
    response = StreamingHttpResponse(
        _released_after(_messages(events, cursor)), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    # nginx and similar proxies would otherwise buffer the stream.
    response["X-Accel-Buffering"] = "no"
    return response


def _released_after(messages: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from messages
    finally:
        _slots.release()


def _messages(events, cursor: CommittedEventCursor) -> Iterator[bytes]:
    yield f"retry: {RECONNECT_MILLISECONDS}\n: connected\n\n".encode()
    generation = hub.generation
    last_write = time.monotonic()
    while not hub.stopping:
        sent = False
        for chunk in _new_events(events, cursor):
            yield chunk
            sent = True
        if sent:
            last_write = time.monotonic()
        idle = time.monotonic() - last_write
        if idle >= settings.EVENT_STREAM_KEEPALIVE_SECONDS:
            yield b": keep-alive\n\n"
            last_write = time.monotonic()
            idle = 0.0
        timeout = GAP_RECHECK_SECONDS if cursor.waiting_for_gap else settings.EVENT_STREAM_KEEPALIVE_SECONDS - idle
        generation = hub.wait(generation, timeout)


def _new_events(events, cursor: CommittedEventCursor) -> Iterator[bytes]:
    """Every event the cursor settles, in id order, as SSE messages."""
    try:
        while True:
            after, up_to = cursor.advance()
            if up_to == after:
                return
            rows = list(
                events.filter(id__gt=after, id__lte=up_to)
                .order_by("id")
                .values("id", "rollout_id", "event_type", "device_uuid", "message", "data", "timestamp")
            )
            connection.close()
            for row in rows:
                yield _message(row)
    finally:
        connection.close()


def _message(row: dict) -> bytes:
    rollout_id = row.pop("rollout_id")
    payload = {**RolloutEventSerializer(RolloutEvent(**row)).data, "rollout_id": str(rollout_id)}
    data = json.dumps(payload, separators=(",", ":"))
    return f"id: {row['id']}\nevent: {row['event_type']}\ndata: {data}\n\n".encode()
