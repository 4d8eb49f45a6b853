"""Device agent endpoints: poll target state, report state, self-register.

Plain Django views rather than DRF: the poll is the hottest request in the
product. A poll is one SQL statement (authentication, the ETag decision and,
when the ETag is stale, the body); a report is two (authentication, then the
write). devices.middleware.AgentEndpointsMiddleware calls these views ahead
of the middleware they do not need, and under gunicorn devices.fastpath
answers authenticated polls, and reports it can store as they are, before
Django with the same functions (device_by_key, poll_lookup, poll_response;
plain_report, answer_report).
"""

import json
import uuid as uuid_lib
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from fleet.api import first_error_message, json_error, require_methods
from fleet.request_limits import too_large_detail

from . import presence, selectors, services
from .keys import bearer_token
from .serializers import RegisterSerializer, StateReportSerializer, plain_state_report


def agent_endpoint(view):
    """Mark a view as an agent endpoint: AgentEndpointsMiddleware serves it
    without the rest of the middleware (sessions, CSRF, auth, messages)."""
    view.agent_endpoint = True
    return view


def _parse_uuid(text: str) -> uuid_lib.UUID | None:
    try:
        return uuid_lib.UUID(text)
    except ValueError:
        return None


# Why a request was refused, from device_by_key, as the response says it.
MISSING_KEY, UNKNOWN_KEY, OTHER_DEVICE = "missing key", "unknown key", "other device"


def device_by_key(authorization: str | None, uuid: str, lookup: Callable[[str], object | None]):
    """The rules of device authentication, for every agent endpoint and every
    statement that looks a device up (`lookup` takes the key, hashes it and
    returns the device's row or None): returns (device, None) or (None, why).

    No or a malformed key, and an unknown key, are refused (401); a valid key
    of another device than the uuid in the path is refused as "not found"
    (404), so a key never tells whether some other uuid exists.
    """
    key = bearer_token(authorization)
    if key is None:
        return None, MISSING_KEY
    device = lookup(key)
    if device is None:
        return None, UNKNOWN_KEY
    if device.uuid != _parse_uuid(uuid):
        return None, OTHER_DEVICE
    return device, None


def authenticate_device(request: HttpRequest, uuid: str, lookup: Callable[[str], object | None]):
    """device_by_key for a Django request: the device, or the response to send."""
    device, refusal = device_by_key(request.headers.get("Authorization"), uuid, lookup)
    if refusal == MISSING_KEY:
        return None, _unauthorized("Send the device api key as 'Authorization: Bearer <key>'.")
    if refusal == UNKNOWN_KEY:
        return None, _unauthorized("Unknown device api key.")
    if refusal == OTHER_DEVICE:
        return None, json_error(404, "not_found", "No such device.")
    return device, None


def _unauthorized(detail: str) -> JsonResponse:
    response = json_error(401, "not_authenticated", detail)
    response["WWW-Authenticate"] = 'Bearer realm="device"'
    return response


def _json_object(request: HttpRequest) -> tuple[dict, JsonResponse | None]:
    """The body as a JSON object (an empty body is `{}`), or the 400 or 413 to send."""
    limit = settings.DEVICE_MAX_BODY_BYTES
    # fleet.wsgi refuses such a body before Django; other entry points
    # (runserver, the test client) get the same answer here.
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > limit:
        return {}, json_error(413, "too_large", too_large_detail(limit))
    return _parse_json_object(request.body)


def _parse_json_object(raw: bytes) -> tuple[dict, JsonResponse | None]:
    if not raw:
        return {}, None
    try:
        body = json.loads(raw)
    # RecursionError: a body of thousands of nested brackets exhausts the C
    # decoder's recursion limit; it is a malformed body, not a server error.
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}, json_error(400, "malformed_json", "The body is not valid JSON.")
    if not isinstance(body, dict):
        return {}, json_error(400, "invalid", "The body must be a JSON object.")
    return body, None


def _validation_error(serializer) -> JsonResponse:
    return json_error(
        400, "invalid", first_error_message(serializer.errors), fields=serializer.errors
    )


def state_etag(target_version: int) -> str:
    # The body changes only with target_version or the poll interval setting.
    return f'"{target_version}.{settings.DEVICE_POLL_INTERVAL_SECONDS}"'


MAX_ETAGS = 8


def etag_versions(if_none_match: str | None) -> tuple[bool, list[int]]:
    """What an If-None-Match header says the agent has: whether it is `*`,
    and the target versions of the entity tags in it that are ours (RFC 9110
    weak comparison: `W/` is ignored). A tag of another poll interval is not."""
    if not if_none_match:
        return False, []
    suffix = f'.{settings.DEVICE_POLL_INTERVAL_SECONDS}"'
    versions = []
    # An agent sends one tag; a few more are read, not a header's thousands.
    for candidate in if_none_match.split(",")[:MAX_ETAGS]:
        candidate = candidate.strip().removeprefix("W/")
        if candidate == "*":
            return True, []
        if candidate.startswith('"') and candidate.endswith(suffix):
            version = candidate[1 : -len(suffix)]
            if version.isascii() and version.isdigit() and len(version) <= 19:
                versions.append(int(version))
    return False, versions


@agent_endpoint
@csrf_exempt
@require_methods("GET", "PATCH")
def device_state(request: HttpRequest, uuid: str) -> HttpResponse:
    if request.method == "PATCH":
        return _report_state(request, uuid)
    return _poll_state(request, uuid)


def _poll_state(request: HttpRequest, uuid: str) -> HttpResponse:
    device, refused = authenticate_device(
        request, uuid, poll_lookup(request.headers.get("If-None-Match"))
    )
    if refused:
        return refused
    return poll_response(device)


def poll_lookup(if_none_match: str | None) -> Callable[[str], selectors.PolledDevice | None]:
    """The poll's one statement, for device_by_key."""
    any_version, versions = etag_versions(if_none_match)

    def lookup(key: str) -> selectors.PolledDevice | None:
        return selectors.device_poll_for_api_key(
            key, any_version=any_version, known_versions=versions
        )

    return lookup


def poll_response(device: selectors.PolledDevice) -> HttpResponse:
    """The answer to an authenticated poll (devices.fastpath sends it too)."""
    presence.record_poll(device_id=device.id, last_seen_at=device.last_seen_at, now=timezone.now())
    if device.services_json is None:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(_state_body(device), content_type="application/json")
    response["ETag"] = state_etag(device.target_version)
    response["Cache-Control"] = "no-cache"
    return response


def _state_body(device: selectors.PolledDevice) -> str:
    # The services arrive as JSON text built by the database (see
    # selectors.POLLED_SERVICE_FIELDS); the rest are a uuid and integers.
    return (
        f'{{"uuid": "{device.uuid}", "target_version": {device.target_version}, '
        f'"services": {device.services_json}, '
        f'"poll_interval_seconds": {int(settings.DEVICE_POLL_INTERVAL_SECONDS)}}}'
    )


def _report_state(request: HttpRequest, uuid: str) -> HttpResponse:
    device, refused = authenticate_device(request, uuid, selectors.device_report_for_api_key)
    if refused:
        return refused
    body, error = _json_object(request)
    if error:
        return error
    report = plain_state_report(body)
    if report is None:
        serializer = StateReportSerializer(data=body)
        if not serializer.is_valid():
            return _validation_error(serializer)
        report = serializer.validated_data.get("target_version"), serializer.reports()
    return answer_report(device, *report)


def plain_report(raw: bytes) -> tuple[int | None, dict[str, services.ServiceReport]] | None:
    """What _report_state makes of the body `raw` when it has nothing to say
    about it (devices.fastpath answers such a report): the target version and
    the service reports; None for an error or anything the serializer must
    decide."""
    body, error = _parse_json_object(raw)
    return None if error else plain_state_report(body)


def answer_report(
    device: selectors.ReportingDevice,
    target_version: int | None,
    reports: dict[str, services.ServiceReport],
) -> HttpResponse:
    """Refuse a valid report that would overflow the service cap, or store it;
    the answer (devices.fastpath sends it too)."""
    too_many = _too_many_services(device, list(reports))
    if too_many:
        return too_many
    services.device_report_state(
        device_id=device.id, target_version=target_version, services=reports
    )
    return JsonResponse({"accepted": True, "target_version": device.target_version})


def _too_many_services(device: selectors.ReportingDevice, names: list[str]) -> JsonResponse | None:
    cap = settings.DEVICE_MAX_SERVICES
    # Cheap certainty first: only a report that could overflow the cap costs
    # the exact count of the stored services it does not name.
    if device.service_count + len(names) <= cap:
        return None
    total = len(names) + selectors.device_services_besides(device_id=device.id, names=names)
    if total <= cap:
        return None
    return json_error(
        400,
        "too_many_services",
        f"A device has at most {cap} services; this report would make it {total}.",
    )


@agent_endpoint
@csrf_exempt
@require_methods("POST")
def device_register(request: HttpRequest) -> HttpResponse:
    key = bearer_token(request.headers.get("Authorization"))
    fleet = selectors.fleet_for_provisioning_key(key) if key else None
    if fleet is None:
        return _unauthorized("Send a fleet provisioning key as 'Authorization: Bearer <key>'.")
    body, error = _json_object(request)
    if error:
        return error
    serializer = RegisterSerializer(data=body)
    if not serializer.is_valid():
        return _validation_error(serializer)
    data = serializer.validated_data
    try:
        device, api_key = services.device_create(
            fleet=fleet, uuid=data.get("uuid"), name=data["name"], tags=data["tags"]
        )
    except services.DeviceAlreadyExists as exc:
        return json_error(409, "device_exists", str(exc))
    return JsonResponse(
        {"uuid": str(device.uuid), "api_key": api_key, "fleet": fleet.slug}, status=201
    )
