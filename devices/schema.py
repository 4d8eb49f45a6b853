"""The devices app in /api/schema/: the agent endpoints, which are plain
Django views drf-spectacular cannot see (documentation-only DRF views are
added for them by `agent_endpoints`), and the read shape of a device's
`services` (target, previous target and last report per service), which
differs from the shape an operator writes."""

from django.urls import reverse
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_basic_type, build_object_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from .models import DeviceUpdateStrategy, ServiceHealth, ServiceStatus
from .serializers import (
    MAX_TARGET_VERSION,
    SERVICE_NAME,
    ErrorSerializer,
    RegisterSerializer,
    StateReportSerializer,
)

DEVICE_KEY = {"deviceKey": []}
PROVISIONING_KEY = {"provisioningKey": []}
SECURITY_SCHEMES = {
    "deviceKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The device's api key, shown once when it was created or registered.",
    },
    "provisioningKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A fleet's provisioning key: devices that hold it register themselves.",
    },
}


# --- The read shape of `services` in the device detail ---


class CurrentTargetSerializer(serializers.Serializer):
    image = serializers.CharField()
    tag = serializers.CharField()
    digest = serializers.CharField(allow_null=True)
    rollout_id = serializers.UUIDField(allow_null=True, help_text="The rollout that set it.")
    changed_at = serializers.DateTimeField(allow_null=True)


class PreviousTargetSerializer(serializers.Serializer):
    image = serializers.CharField()
    tag = serializers.CharField(allow_null=True)
    digest = serializers.CharField(allow_null=True)


class LastReportSerializer(serializers.Serializer):
    image = serializers.CharField(allow_null=True)
    tag = serializers.CharField(allow_null=True)
    digest = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(ServiceStatus.choices, allow_null=True)
    health = serializers.ChoiceField(ServiceHealth.choices, allow_null=True)
    reported_at = serializers.DateTimeField()


class DeviceServiceStateSerializer(serializers.Serializer):
    target = CurrentTargetSerializer(allow_null=True, help_text="What the device is told to run.")
    pinned = serializers.BooleanField(help_text="No rollout changes a pinned service.")
    previous = PreviousTargetSerializer(allow_null=True, help_text="The target before the current one.")
    reported = LastReportSerializer(allow_null=True, help_text="The device's last report.")


class ServiceTargetsFieldExtension(OpenApiSerializerFieldExtension):
    """Written as `{name: target}`, read as `{name: {target, pinned,
    previous, reported}}` (devices.serializers.ServiceTargetsField)."""

    target_class = "devices.serializers.ServiceTargetsField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        if direction == "request":
            child = auto_schema._map_serializer_field(self.target.child, direction)
        else:
            child = auto_schema.resolve_serializer(DeviceServiceStateSerializer, direction).ref
        return {
            "type": "object",
            "additionalProperties": child,
            "propertyNames": {"pattern": SERVICE_NAME.pattern},
        }


# --- The agent endpoints ---


class PolledServiceSerializer(serializers.Serializer):
    """One service of a poll (devices.selectors.POLLED_SERVICE_FIELDS)."""

    image = serializers.CharField()
    tag = serializers.CharField()
    digest = serializers.CharField(allow_null=True)
    rollout_id = serializers.UUIDField(allow_null=True)
    update_strategy = serializers.ChoiceField(DeviceUpdateStrategy.choices)
    stop_timeout_seconds = serializers.IntegerField(min_value=0)


class PolledStateSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    target_version = serializers.IntegerField(min_value=0, max_value=MAX_TARGET_VERSION)
    services = serializers.DictField(child=PolledServiceSerializer())
    poll_interval_seconds = serializers.IntegerField()


class ReportAnswerSerializer(serializers.Serializer):
    accepted = serializers.BooleanField()
    target_version = serializers.IntegerField()


class RegisteredSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    api_key = serializers.CharField(help_text="Shown once.")
    fleet = serializers.CharField(help_text="The fleet's slug.")


DEVICE_UUID = OpenApiParameter(
    "uuid", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The device's uuid."
)
IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="The ETag of the state the agent has: 304 when it is still current.",
)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


# Never routed: their methods exist for the schema only (devices.views serves).
class _AgentDocumentation(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    # Not the operator API's filters or pagination.
    filter_backends: list = []
    pagination_class = None


class DeviceStateDocumentation(_AgentDocumentation):
    @extend_schema(
        operation_id="device_state_poll",
        tags=["device agent"],
        summary="Poll the device's target state",
        parameters=[DEVICE_UUID, IF_NONE_MATCH],
        auth=[DEVICE_KEY],
        responses={
            200: PolledStateSerializer,
            304: OpenApiResponse(description="The agent's ETag is current: empty body."),
            401: _error("No device api key, or an unknown one."),
            404: _error("The key belongs to another device (or the uuid is malformed)."),
        },
    )
    def get(self, request, uuid):
        raise NotImplementedError

    @extend_schema(
        operation_id="device_state_report",
        tags=["device agent"],
        summary="Report the device's current state",
        description="Fields a report leaves out keep their stored value; unknown fields are ignored.",
        parameters=[DEVICE_UUID],
        auth=[DEVICE_KEY],
        request=StateReportSerializer,
        responses={
            200: ReportAnswerSerializer,
            400: _error("A field of the wrong type or out of range, or too many services."),
            401: _error("No device api key, or an unknown one."),
            404: _error("The key belongs to another device (or the uuid is malformed)."),
            413: _error("The body is over the agent endpoints' limit (256 KiB)."),
        },
    )
    def patch(self, request, uuid):
        raise NotImplementedError


class DeviceRegisterDocumentation(_AgentDocumentation):
    @extend_schema(
        operation_id="device_register",
        tags=["device agent"],
        summary="Register a device with a fleet's provisioning key",
        auth=[PROVISIONING_KEY],
        request=RegisterSerializer,
        responses={
            201: RegisteredSerializer,
            400: _error("A field of the wrong type or out of range."),
            401: _error("No provisioning key, or an unknown one."),
            409: _error("A device with this uuid exists."),
            413: _error("The body is over the agent endpoints' limit (256 KiB)."),
        },
    )
    def post(self, request):
        raise NotImplementedError


def agent_endpoints(endpoints):
    """drf-spectacular preprocessing hook: the agent endpoints, documented by
    the views above (the URL patterns are those of devices.urls)."""
    state = reverse("device-state", kwargs={"uuid": "UUID"}).replace("UUID", "{uuid}")
    register = reverse("device-register")
    state_regex = "^" + state.lstrip("/").replace("{uuid}", "(?P<uuid>[^/.]+)") + "$"
    return [
        *endpoints,
        (register, "^" + register.lstrip("/") + "$", "POST", DeviceRegisterDocumentation.as_view()),
        (state, state_regex, "GET", DeviceStateDocumentation.as_view()),
        (state, state_regex, "PATCH", DeviceStateDocumentation.as_view()),
    ]


def agent_security_schemes(result, generator, request, public):
    """drf-spectacular postprocessing hook: the agents' two bearer keys."""
    result.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    return result
