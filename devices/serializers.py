import copy
import re

from django.conf import settings
from rest_framework import serializers

from fleet.api import StrictJSONTypes

from . import access
from .models import (
    Device,
    DeviceService,
    Fleet,
    FleetAuditEvent,
    Role,
    ServiceHealth,
    ServiceHistory,
    ServiceStatus,
)
from .references import InvalidReference, parse_reference, validate_digest, validate_tag
from .selectors import online_since
from .services import ServiceChange, ServiceReport, ServiceTarget

# Compose service names: what a device's agent can run side by side.
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SLUG = re.compile(r"[-a-zA-Z0-9_]+")
TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# The largest value of the bigint column: beyond it PostgreSQL raises, and a
# report must answer 400 rather than 500.
MAX_TARGET_VERSION = 2**63 - 1


def _validate_service_names(value: dict) -> dict:
    for name in value:
        # fullmatch: `$` would let a trailing newline through.
        if not SERVICE_NAME.fullmatch(name):
            raise serializers.ValidationError(
                f"{name!r} is not a valid service name (letters, digits, '_', '.', '-')."
            )
    return value


def _validate_service_count(value: dict) -> dict:
    cap = settings.DEVICE_MAX_SERVICES
    if len(value) > cap:
        raise serializers.ValidationError(f"A device has at most {cap} services, got {len(value)}.")
    return value


class StrictCharField(serializers.CharField):
    """A JSON string, nothing else: DRF's CharField turns a number into its
    text, so `"image": 5` would become an image named "5"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictRegexField(serializers.RegexField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, nothing else: DRF's IntegerField also takes "7", 7.0
    and true."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class UUIDStringField(serializers.UUIDField):
    """A UUID in any usual string spelling. DRF also takes a JSON number as the
    integer value of a UUID, which turns a client's mistake into a device."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class TagListField(serializers.ListField):
    child = StrictRegexField(TAG_NAME, max_length=64)

    def __init__(self, **kwargs):
        # A keyword, not a class attribute: ListField.__init__ resets the latter.
        kwargs.setdefault("max_length", 50)
        super().__init__(**kwargs)


class FleetSlugField(serializers.SlugRelatedField):
    """A fleet named by its slug. A value that cannot be a slug (say, one
    with a NUL, which PostgreSQL refuses) is simply not found."""

    def __init__(self, *, global_perm: str | tuple[str, ...] = "devices.view_fleet", **kwargs):
        # The model permission that lets a caller name any fleet here.
        self.global_perm = global_perm
        kwargs.setdefault("queryset", Fleet.objects.all())
        super().__init__(slug_field="slug", **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str) and not SLUG.fullmatch(data):
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)

    def get_queryset(self):
        # A fleet the caller may not read does not exist for them: the same
        # 400 as a missing slug, so input cannot probe for fleets.
        request = self.context.get("request")
        queryset = super().get_queryset()
        if request is None:
            return queryset
        return access.scope(queryset, request.user, perm=self.global_perm, fleet_field="pk")


# --- Agent endpoints ---


def _normalized_service_report(attrs: dict) -> dict:
    """A reported service's image normalized, its tag and digest checked (the
    image's own when the report names none); raises InvalidReference."""
    if attrs.get("image"):
        ref = parse_reference(attrs["image"])
        attrs["image"] = ref.repository
        attrs["tag"] = attrs.get("tag") or ref.tag
        attrs["digest"] = attrs.get("digest") or ref.digest
    if attrs.get("tag"):
        attrs["tag"] = validate_tag(attrs["tag"])
    if attrs.get("digest"):
        attrs["digest"] = validate_digest(attrs["digest"])
    return attrs


class ReportedServiceSerializer(serializers.Serializer):
    image = StrictCharField(required=False, allow_null=True, max_length=255)
    tag = StrictCharField(required=False, allow_null=True, max_length=128)
    digest = StrictCharField(required=False, allow_null=True, max_length=100)
    status = StrictChoiceField(ServiceStatus.choices, required=False, allow_null=True)
    health = StrictChoiceField(ServiceHealth.choices, required=False, allow_null=True)

    def validate(self, attrs):
        try:
            return _normalized_service_report(attrs)
        except InvalidReference as exc:
            raise serializers.ValidationError(str(exc)) from exc


class StateReportSerializer(serializers.Serializer):
    target_version = StrictIntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_TARGET_VERSION
    )
    services = serializers.DictField(
        child=ReportedServiceSerializer(),
        required=False,
        validators=[_validate_service_count, _validate_service_names],
    )

    def get_fields(self):
        # DRF deep-copies every declared field, nested ones included, for
        # every serializer it creates: more than half of what validating a
        # report cost. The declared fields are never bound, and validating
        # keeps no state in a field, so a shallow copy of each serves: the
        # nested service serializer is then built once and shared.
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}

    def reports(self) -> dict[str, ServiceReport]:
        # validated_data holds only the keys the agent sent: see device_report_state.
        return {
            name: dict(attrs) for name, attrs in self.validated_data.get("services", {}).items()
        }


def _plain_value_check(field: serializers.Field):
    """Whether a JSON value is one that `field` takes exactly as it is: a
    string DRF would neither strip nor refuse, or one of the choices."""
    if isinstance(field, StrictChoiceField):
        choices = frozenset(value for value in field.choice_strings_to_values.values())
        return lambda value: type(value) is str and value in choices
    assert isinstance(field, StrictCharField) and not field.allow_blank, field
    limit = field.max_length
    # ASCII and printable: no NUL, no surrogate, no control character; no
    # space at either end: nothing DRF's CharField strips or refuses.
    return lambda value: (
        type(value) is str
        and 0 < len(value) <= limit
        and value.isascii()
        and value.isprintable()
        and value.strip() == value
    )


# Field name -> the check of a plain value, in the serializer's field order.
_PLAIN_REPORTED_FIELDS = {
    name: _plain_value_check(field)
    for name, field in ReportedServiceSerializer._declared_fields.items()
}


def plain_state_report(body: dict) -> tuple[int | None, dict[str, ServiceReport]] | None:
    """What StateReportSerializer makes of a report that holds nothing
    unusual, without running DRF (whose fields cost a report more CPU than
    its SQL does): the target version and the service reports, equal to the
    serializer's. None for anything else (a wrong type, a value DRF would
    strip or refuse, too many services, a bad reference): the serializer
    then decides, so every error an agent can get is still DRF's own.
    tests/test_report_validation.py holds the two to the same answers."""
    target_version = body.get("target_version")
    if target_version is not None and not (
        type(target_version) is int and 0 <= target_version <= MAX_TARGET_VERSION
    ):
        return None
    services = body.get("services", {})
    if type(services) is not dict or len(services) > settings.DEVICE_MAX_SERVICES:
        return None
    reports = {}
    for name, sent in services.items():
        if type(sent) is not dict or not SERVICE_NAME.fullmatch(name):
            return None
        report = {}
        for field, is_plain in _PLAIN_REPORTED_FIELDS.items():
            if field in sent:
                value = sent[field]
                if value is not None and not is_plain(value):
                    return None
                report[field] = value
        try:
            reports[name] = _normalized_service_report(report)
        except InvalidReference:
            return None
    return target_version, reports


class RegisterSerializer(serializers.Serializer):
    uuid = UUIDStringField(required=False, allow_null=True)
    name = StrictCharField(required=False, allow_blank=True, max_length=200, default="")
    tags = TagListField(required=False, default=list)


# --- Operator API ---


class ServiceTargetSerializer(StrictJSONTypes, serializers.Serializer):
    image = StrictCharField(max_length=255)
    tag = StrictCharField(required=False, allow_null=True, max_length=128)
    digest = StrictCharField(required=False, allow_null=True, max_length=100)

    def validate(self, attrs) -> ServiceTarget:
        try:
            ref = parse_reference(attrs["image"])
            tag = attrs.get("tag") or ref.tag or "latest"
            digest = attrs.get("digest") or ref.digest
            if ref.tag and attrs.get("tag") and ref.tag != attrs["tag"]:
                raise InvalidReference(f"image names tag {ref.tag!r} but tag is {attrs['tag']!r}.")
            if ref.digest and attrs.get("digest") and ref.digest != validate_digest(digest):
                raise InvalidReference(
                    f"image names digest {ref.digest!r} but digest is {attrs['digest']!r}."
                )
            # Re-parse the whole reference so the tag and digest are checked
            # against the grammar exactly like an image string is.
            full = parse_reference(f"{ref.repository}:{tag}" + (f"@{digest}" if digest else ""))
        except InvalidReference as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return ServiceTarget(image=full.repository, tag=full.tag, digest=full.digest)


class ServiceChangeSerializer(StrictJSONTypes, serializers.Serializer):
    """A service in `PATCH /devices/{uuid}/`: a new target (image optional
    when the service has one: it stays) and/or `pinned`."""

    image = serializers.CharField(required=False, max_length=255)
    tag = serializers.CharField(required=False, allow_null=True, max_length=128)
    digest = serializers.CharField(required=False, allow_null=True, max_length=100)
    pinned = serializers.BooleanField(required=False)

    def validate(self, attrs) -> ServiceChange:
        image, tag, digest = attrs.get("image"), attrs.get("tag"), attrs.get("digest")
        try:
            if image:
                # As on creation: an image without a tag means its latest.
                target = ServiceTargetSerializer().validate(attrs)
                image, tag, digest = target.image, target.tag, target.digest
            else:
                tag = validate_tag(tag) if tag else None
                digest = validate_digest(digest) if digest else None
        except InvalidReference as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return ServiceChange(image=image, tag=tag, digest=digest, pinned=attrs.get("pinned"))


class FleetSerializer(StrictJSONTypes, serializers.ModelSerializer):
    device_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Fleet
        fields = ["slug", "name", "device_count", "created_at"]
        read_only_fields = ["created_at"]
        # A taken slug is a conflict (409 `fleet_exists`, from the unique
        # index in services.fleet_create), not a malformed body: no
        # UniqueValidator. The slug's grammar and length still give 400.
        extra_kwargs = {"slug": {"validators": []}}


class FleetUpdateSerializer(FleetSerializer):
    class Meta(FleetSerializer.Meta):
        read_only_fields = ["slug", "created_at"]


def _service_representation(service: DeviceService) -> dict:
    return {
        "target": {
            "image": service.target_image,
            "tag": service.target_tag,
            "digest": service.target_digest,
            "rollout_id": str(service.target_rollout_id) if service.target_rollout_id else None,
            "changed_at": service.target_changed_at,
        }
        if service.target_image
        else None,
        "pinned": service.pinned,
        "previous": {
            "image": service.previous_image,
            "tag": service.previous_tag,
            "digest": service.previous_digest,
        }
        if service.previous_image
        else None,
        "reported": {
            "image": service.reported_image,
            "tag": service.reported_tag,
            "digest": service.reported_digest,
            "status": service.reported_status,
            "health": service.reported_health,
            "reported_at": service.reported_at,
        }
        if service.reported_at
        else None,
    }


class ServiceTargetsField(serializers.DictField):
    """Written as `{name: target}`; read as target, previous target and last
    report per service, from the device's `services` rows."""

    child = ServiceTargetSerializer()

    def to_representation(self, services) -> dict:
        return {service.name: _service_representation(service) for service in services.all()}


class DeviceSerializer(StrictJSONTypes, serializers.ModelSerializer):
    uuid = UUIDStringField(required=False)
    fleet = FleetSlugField(global_perm=("devices.add_device", "devices.view_fleet"))
    tags = TagListField(required=False)
    services = ServiceTargetsField(
        required=False, validators=[_validate_service_count, _validate_service_names]
    )
    online = serializers.SerializerMethodField()

    class Meta:
        model = Device
        fields = [
            "uuid",
            "name",
            "fleet",
            "tags",
            "services",
            "target_version",
            "reported_target_version",
            "online",
            "last_seen_at",
            "last_report_at",
            "created_at",
        ]
        read_only_fields = [
            "target_version",
            "reported_target_version",
            "last_seen_at",
            "last_report_at",
            "created_at",
        ]

    def validate_services(self, value: dict) -> dict:
        # With the services a device already has: the cap is per device.
        if self.instance is not None:
            stored = set(self.instance.services.values_list("name", flat=True))
            _validate_service_count(stored | set(value))
        return value

    def get_online(self, device: Device) -> bool:
        cutoff = self.context.get("online_since") or online_since()
        return device.last_seen_at is not None and device.last_seen_at >= cutoff

    def to_representation(self, device: Device) -> dict:
        data = super().to_representation(device)
        data["tags"] = sorted(tag.name for tag in device.tag_set.all())
        return data


class ServiceChangesField(ServiceTargetsField):
    child = ServiceChangeSerializer()


class DeviceUpdateSerializer(DeviceSerializer):
    """PATCH/PUT: the uuid and the fleet of a device do not change; services
    take ServiceChangeSerializer (pins, partial targets)."""

    uuid = serializers.UUIDField(read_only=True)
    fleet = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    services = ServiceChangesField(required=False, validators=[_validate_service_names])



# --- Per-fleet access ---


class MemberSerializer(StrictJSONTypes, serializers.Serializer):
    username = serializers.CharField(source="user.username", max_length=150)
    role = serializers.ChoiceField(Role.choices)
    created_at = serializers.DateTimeField(read_only=True)


class MemberUpdateSerializer(StrictJSONTypes, serializers.Serializer):
    role = serializers.ChoiceField(Role.choices)


class RotatedKeySerializer(serializers.Serializer):
    provisioning_key = serializers.CharField()


class FleetAuditEventSerializer(serializers.ModelSerializer):
    fleet = serializers.CharField(source="fleet_slug")

    class Meta:
        model = FleetAuditEvent
        fields = ["id", "fleet", "action", "actor", "subject", "data", "timestamp"]


class ServiceHistorySerializer(serializers.ModelSerializer):
    class Meta:
        model = ServiceHistory
        fields = [
            "service",
            "image",
            "tag",
            "digest",
            "source",
            "rollout_id",
            "deployed_at",
            "replaced_at",
            "outcome",
        ]


class RollbackSerializer(StrictJSONTypes, serializers.Serializer):
    """`{}` (every service), `{"service"}`, or `{"service", "tag", "digest"?}`."""

    service = serializers.CharField(required=False, max_length=100)
    tag = serializers.CharField(required=False, max_length=128)
    digest = serializers.CharField(required=False, allow_null=True, max_length=100)

    def validate(self, attrs):
        if ("tag" in attrs or attrs.get("digest")) and "service" not in attrs:
            raise serializers.ValidationError("A tag needs the service it is for.")
        try:
            if "tag" in attrs:
                attrs["tag"] = validate_tag(attrs["tag"])
            if attrs.get("digest"):
                attrs["digest"] = validate_digest(attrs["digest"])
        except InvalidReference as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return attrs


class ErrorSerializer(serializers.Serializer):
    """The error body of every 4xx, for the OpenAPI schema."""

    error = serializers.CharField()
    detail = serializers.CharField()
