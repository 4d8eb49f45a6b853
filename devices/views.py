"""Device agent endpoints: poll target state, report state, self-register.

Plain Django views rather than DRF: the poll is the hottest request in the
product and must cost one indexed query and no framework machinery.
"""

import json
import uuid as uuid_lib
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from fleet.api import first_error_message, json_error, require_methods

from . import selectors, services
from .keys import bearer_token
from .serializers import RegisterSerializer, StateReportSerializer


def _parse_uuid(text: str) -> uuid_lib.UUID | None:
    try:
        return uuid_lib.UUID(text)
    except ValueError:
        return None


def device_key_required(view):
    """Authenticate the agent by its Bearer key and check it owns the uuid.

    Unknown or missing key: 401. A valid key of another device: 404, so a key
    never tells whether some other uuid exists.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, uuid: str) -> HttpResponse:
        key = bearer_token(request.headers.get("Authorization"))
        if key is None:
            return _unauthorized("Send the device api key as 'Authorization: Bearer <key>'.")
        device = selectors.device_for_api_key(key)
        if device is None:
            return _unauthorized("Unknown device api key.")
        if device.uuid != _parse_uuid(uuid):
            return json_error(404, "not_found", "No such device.")
        return view(request, device)

    return wrapper


def _unauthorized(detail: str) -> JsonResponse:
    response = json_error(401, "not_authenticated", detail)
    response["WWW-Authenticate"] = 'Bearer realm="device"'
    return response


def _json_object(request: HttpRequest) -> tuple[dict, JsonResponse | None]:
    """The body as a JSON object (an empty body is `{}`), or the 400 to send."""
    if not request.body:
        return {}, None
    try:
        body = json.loads(request.body)
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


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against a list of entity tags or `*`."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


@csrf_exempt
@require_methods("GET", "PATCH")
@device_key_required
def device_state(request: HttpRequest, device: selectors.AuthenticatedDevice) -> HttpResponse:
    if request.method == "PATCH":
        return _report_state(request, device)
    return _poll_state(request, device)


def _poll_state(request: HttpRequest, device: selectors.AuthenticatedDevice) -> HttpResponse:
    services.device_record_poll(device_id=device.id, last_seen_at=device.last_seen_at)
    etag = state_etag(device.target_version)
    if etag_matches(request.headers.get("If-None-Match"), etag):
        response = HttpResponse(status=304)
    else:
        response = JsonResponse(
            {
                "uuid": str(device.uuid),
                "target_version": device.target_version,
                "services": selectors.device_target_services(device_id=device.id),
                "poll_interval_seconds": settings.DEVICE_POLL_INTERVAL_SECONDS,
            }
        )
    response["ETag"] = etag
    response["Cache-Control"] = "no-cache"
    return response


def _report_state(request: HttpRequest, device: selectors.AuthenticatedDevice) -> HttpResponse:
    body, error = _json_object(request)
    if error:
        return error
    serializer = StateReportSerializer(data=body)
    if not serializer.is_valid():
        return _validation_error(serializer)
    services.device_report_state(
        device_id=device.id,
        target_version=serializer.validated_data.get("target_version"),
        services=serializer.reports(),
    )
    return JsonResponse({"accepted": True, "target_version": device.target_version})


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
