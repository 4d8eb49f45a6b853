import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rest_framework import serializers

from devices.references import (
    InvalidReference,
    normalize_image_pattern,
    parse_reference,
    validate_digest,
)
from devices.serializers import FleetSlugField, TagListField, UUIDStringField
from fleet.api import StrictJSONTypes

from .models import (
    MAX_RETRIES,
    DeviceStatus,
    ImagePolicy,
    Rollout,
    RolloutDevice,
    RolloutEvent,
    UpdateStrategy,
)
from .selectors import failure_rate, pattern_is_pollable
from .versions import parse_constraint, validate_required_versions
from .windows import DAYS

CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
MAX_BATCHES = 20
# A year: longer is surely a typo, and far larger values overflow datetimes.
MAX_BATCH_DELAY_MINUTES = 365 * 24 * 60
# An hour: a container that needs longer to stop is hung; docker kills it then.
MAX_STOP_TIMEOUT_SECONDS = 3600


def normalize_pattern_to_store(pattern: str) -> str:
    """The normalized pattern, checked against the column's length: the host
    and `library/` that normalization adds can push it past the limit."""
    normalized = normalize_image_pattern(pattern)
    limit = ImagePolicy._meta.get_field("image_pattern").max_length
    if len(normalized) > limit:
        raise InvalidReference(
            f"{pattern!r} is too long: normalized to {len(normalized)} characters, at most {limit}."
        )
    return normalized


def validate_batch_percentages(value) -> list[int]:
    if not isinstance(value, list) or not value:
        raise serializers.ValidationError("Give a non-empty list of whole percentages.")
    if len(value) > MAX_BATCHES:
        raise serializers.ValidationError(f"At most {MAX_BATCHES} batches.")
    if any(not isinstance(p, int) or isinstance(p, bool) for p in value):
        raise serializers.ValidationError("Percentages must be whole numbers.")
    if any(p <= 0 for p in value) or any(a >= b for a, b in zip(value, value[1:])):
        raise serializers.ValidationError("Percentages must be positive and strictly increasing.")
    if value[-1] != 100:
        raise serializers.ValidationError("The last percentage must be 100.")
    return value


def validate_maintenance_window(value):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise serializers.ValidationError("Give an object with days, start, end and timezone.")
    days = value.get("days")
    if not isinstance(days, list) or not days or any(day not in DAYS for day in days):
        raise serializers.ValidationError(f"days must be a non-empty list of {', '.join(DAYS)}.")
    for key in ("start", "end"):
        if not isinstance(value.get(key), str) or not CLOCK.fullmatch(value[key]):
            raise serializers.ValidationError(f"{key} must be a time of day as HH:MM.")
    if value["start"] == value["end"]:
        raise serializers.ValidationError("start and end must differ.")
    timezone = value.get("timezone")
    try:
        if not isinstance(timezone, str) or not timezone:
            raise ValueError
        ZoneInfo(timezone)
    except (ValueError, ZoneInfoNotFoundError):
        raise serializers.ValidationError(
            f"{timezone!r} is not an IANA time zone such as 'Europe/Berlin'."
        ) from None
    return {"days": days, "start": value["start"], "end": value["end"], "timezone": timezone}


class ImagePolicySerializer(StrictJSONTypes, serializers.ModelSerializer):
    fleet = FleetSlugField(
        required=False,
        allow_null=True,
        global_perm=("rollouts.add_imagepolicy", "rollouts.change_imagepolicy", "devices.view_fleet"),
    )
    batch_percentages = serializers.JSONField(
        required=False, validators=[validate_batch_percentages]
    )
    batch_delay_minutes = serializers.FloatField(
        required=False, min_value=0, max_value=MAX_BATCH_DELAY_MINUTES
    )
    health_check_timeout_seconds = serializers.IntegerField(
        required=False, min_value=1, max_value=7 * 24 * 3600
    )
    max_failure_rate = serializers.FloatField(required=False, min_value=0, max_value=1)
    min_failure_samples = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    device_tags = TagListField(required=False)
    device_uuids = serializers.ListField(
        child=UUIDStringField(), required=False, max_length=10_000
    )
    maintenance_window = serializers.JSONField(
        required=False, allow_null=True, validators=[validate_maintenance_window]
    )
    stop_timeout_seconds = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_STOP_TIMEOUT_SECONDS
    )
    version_constraint = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=200
    )
    required_versions = serializers.JSONField(required=False)
    poll_interval_minutes = serializers.FloatField(required=False, max_value=MAX_BATCH_DELAY_MINUTES)
    ramp_initial = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=1_000_000
    )
    ramp_factor = serializers.FloatField(required=False, max_value=1_000_000)
    max_retries = serializers.IntegerField(required=False, min_value=0, max_value=MAX_RETRIES)

    class Meta:
        model = ImagePolicy
        fields = [
            "id",
            "image_pattern",
            "update_strategy",
            "batch_percentages",
            "batch_delay_minutes",
            "health_check_enabled",
            "health_check_timeout_seconds",
            "auto_rollback_enabled",
            "max_failure_rate",
            "min_failure_samples",
            "fleet",
            "device_tags",
            "device_uuids",
            "maintenance_window",
            "require_digest",
            "device_update_strategy",
            "stop_timeout_seconds",
            "version_constraint",
            "allowed_updates",
            "include_prereleases",
            "allow_downgrade",
            "auto_approve_max_risk",
            "required_versions",
            "poll_registry",
            "poll_interval_minutes",
            "last_polled_at",
            "last_poll_error",
            "ramp_initial",
            "ramp_factor",
            "max_retries",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at", "last_polled_at", "last_poll_error"]

    def validate_image_pattern(self, value: str) -> str:
        try:
            return normalize_pattern_to_store(value)
        except InvalidReference as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate_ramp_factor(self, value: float) -> float:
        if not value > 1:
            raise serializers.ValidationError("Must be greater than 1.")
        return value

    def validate_device_uuids(self, value) -> list[str]:
        return [str(uuid) for uuid in value]

    def validate_version_constraint(self, value):
        if value is None or not value.strip():
            return None
        try:
            parse_constraint(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return value.strip()

    def validate_poll_interval_minutes(self, value: float) -> float:
        # Any positive number (the beat looks every minute, so less polls
        # each minute).
        if value <= 0:
            raise serializers.ValidationError("Give a number of minutes greater than 0.")
        return value

    def validate_required_versions(self, value) -> list[str]:
        try:
            return validate_required_versions(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate_maintenance_window(self, value):
        # Normalized (extra keys dropped) after the field validator checked it.
        return validate_maintenance_window(value)

    def validate(self, attrs):
        strategy = attrs.get("update_strategy", getattr(self.instance, "update_strategy", None))
        window = attrs.get("maintenance_window", getattr(self.instance, "maintenance_window", None))
        if strategy == UpdateStrategy.SCHEDULED and not window:
            raise serializers.ValidationError(
                {"maintenance_window": "The scheduled strategy needs a maintenance window."}
            )
        polls = attrs.get("poll_registry", getattr(self.instance, "poll_registry", False))
        pattern = attrs.get("image_pattern", getattr(self.instance, "image_pattern", ""))
        if polls and not pattern_is_pollable(pattern):
            raise serializers.ValidationError(
                {"poll_registry": "A pattern with wildcards in its repository cannot be polled: "
                 "name one repository (the tag may have wildcards)."}
            )
        return attrs


class NullIfBlankCharField(serializers.CharField):
    def to_representation(self, value):
        return value or None


class RolloutSerializer(serializers.ModelSerializer):
    counts = serializers.SerializerMethodField()
    # The live number of rows, not the fan-out's: a deleted device leaves it.
    total_devices = serializers.IntegerField(source="count_total", read_only=True)
    failure_rate = serializers.SerializerMethodField()
    # Null once the policy or the fleet is deleted; fleet is null for all fleets.
    policy = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    fleet = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    # The username of who approved it; null when nobody had to.
    approved_by = NullIfBlankCharField(read_only=True, allow_null=True)

    class Meta:
        model = Rollout
        fields = [
            "id",
            "image",
            "new_tag",
            "new_digest",
            "digest_source",
            "policy",
            "strategy",
            "status",
            "status_reason",
            "trigger",
            "risk",
            "approved_by",
            "approved_at",
            "batch_percentages",
            "current_batch",
            "total_batches",
            "total_devices",
            "counts",
            "failure_rate",
            "max_failure_rate",
            "min_failure_samples",
            "batch_delay_minutes",
            "health_check_enabled",
            "health_check_timeout_seconds",
            "auto_rollback_enabled",
            "maintenance_window",
            "require_digest",
            "device_update_strategy",
            "stop_timeout_seconds",
            "version_constraint",
            "allowed_updates",
            "include_prereleases",
            "allow_downgrade",
            "auto_approve_max_risk",
            "required_versions",
            "ramp_initial",
            "ramp_factor",
            "max_retries",
            "fleet",
            "device_tags",
            "device_uuids",
            "superseded_by",
            "created_at",
            "started_at",
            "next_batch_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_counts(self, rollout: Rollout) -> dict[str, int]:
        return {status: getattr(rollout, f"count_{status}") for status in DeviceStatus.values}

    def get_failure_rate(self, rollout: Rollout) -> float:
        return failure_rate(rollout.count_healthy, rollout.count_failures)


class RolloutCreateSerializer(StrictJSONTypes, serializers.Serializer):
    image = serializers.CharField(max_length=300)
    tag = serializers.CharField(max_length=128, required=False)
    digest = serializers.CharField(max_length=100, required=False, allow_null=True)
    policy = serializers.PrimaryKeyRelatedField(
        queryset=ImagePolicy.objects.all(), required=False, allow_null=True
    )
    # Roll a fleet back to an older tag on purpose (overrides the policy's).
    allow_downgrade = serializers.BooleanField(required=False, allow_null=True, default=None)
    # Stepping stones for this rollout only (instead of the policy's).
    required_versions = serializers.JSONField(required=False, allow_null=True, default=None)

    def validate(self, attrs):
        try:
            ref = parse_reference(attrs["image"])
            tag = attrs.get("tag") or ref.tag
            if not tag:
                raise InvalidReference("give the tag to roll out (in `tag` or as image:tag).")
            digest = attrs.get("digest") or ref.digest
            full = parse_reference(f"{ref.repository}:{tag}" + (f"@{validate_digest(digest)}" if digest else ""))
        except InvalidReference as exc:
            raise serializers.ValidationError({"image": str(exc)}) from exc
        required = attrs.get("required_versions")
        if required is not None:
            try:
                validate_required_versions(required, pushed_tag=full.tag)
            except ValueError as exc:
                raise serializers.ValidationError({"required_versions": str(exc)}) from exc
        return {
            "image": full.repository,
            "tag": full.tag,
            "digest": full.digest,
            "policy": attrs.get("policy"),
            "allow_downgrade": attrs.get("allow_downgrade"),
            "required_versions": required,
        }


class RolloutDeviceSerializer(serializers.ModelSerializer):
    device_uuid = serializers.UUIDField(source="device.uuid")
    device_name = serializers.CharField(source="device.name")

    class Meta:
        model = RolloutDevice
        fields = [
            "device_uuid",
            "device_name",
            "service",
            "batch",
            "status",
            "failure_reason",
            "skip_reason",
            "old_tag",
            "old_digest",
            "new_tag",
            "new_digest",
            "scheduled_at",
            "verdict_at",
            "via",
            "attempts",
        ]


class RolloutEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RolloutEvent
        fields = ["id", "event_type", "device_uuid", "message", "data", "timestamp"]


# --- Dry run (POST /rollouts/preview): plain data, described for the schema ---


class PreviewBatchSerializer(serializers.Serializer):
    batch = serializers.IntegerField()
    devices = serializers.IntegerField()
    sample_devices = serializers.ListField(child=serializers.UUIDField())


class UpgradePathSerializer(serializers.Serializer):
    # `from` is a Python keyword: declared below.
    via = serializers.ListField(child=serializers.CharField())
    devices = serializers.IntegerField()


UpgradePathSerializer._declared_fields = {
    "from": serializers.CharField(allow_null=True),
    **UpgradePathSerializer._declared_fields,
}


class RolloutPreviewSerializer(serializers.Serializer):
    policy = serializers.IntegerField()
    image = serializers.CharField()
    tag = serializers.CharField()
    digest = serializers.CharField(allow_null=True)
    strategy = serializers.CharField()
    risk = serializers.CharField()
    approval_required = serializers.BooleanField()
    total_devices = serializers.IntegerField()
    skipped = serializers.DictField(child=serializers.IntegerField())
    batches = PreviewBatchSerializer(many=True)
    upgrade_paths = UpgradePathSerializer(many=True)
    estimated_duration_seconds = serializers.IntegerField()


# --- Inventory (GET /images/): plain data, described for the OpenAPI schema ---


class LatestVersionSerializer(serializers.Serializer):
    tag = serializers.CharField()
    digest = serializers.CharField(allow_null=True)
    rollout_id = serializers.UUIDField()
    completed_at = serializers.DateTimeField()


class NewestPushSerializer(serializers.Serializer):
    tag = serializers.CharField()
    digest = serializers.CharField(allow_null=True)
    received_at = serializers.DateTimeField()


class VersionCountSerializer(serializers.Serializer):
    tag = serializers.CharField(allow_null=True)
    digest = serializers.CharField(allow_null=True)
    targeted = serializers.IntegerField()
    running = serializers.IntegerField()


class RolloutTotalsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    completed = serializers.IntegerField()
    rolled_back = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class ImageInventorySerializer(serializers.Serializer):
    image = serializers.CharField()
    devices = serializers.IntegerField()
    latest = LatestVersionSerializer(allow_null=True)
    newest_push = NewestPushSerializer(allow_null=True)
    versions = VersionCountSerializer(many=True)
    behind = serializers.IntegerField()
    drifting = serializers.IntegerField()
    rollouts = RolloutTotalsSerializer()
    success_rate = serializers.FloatField(allow_null=True)
