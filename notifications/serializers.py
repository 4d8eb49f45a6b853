from rest_framework import serializers

from rollouts.models import EventType
from fleet.api import StrictJSONTypes

from .models import NotificationDelivery, NotificationHook
from .network import RefusedURL, check_hook_url


class NotificationHookSerializer(StrictJSONTypes, serializers.ModelSerializer):
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices), required=False, max_length=100
    )
    secret = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=200, trim_whitespace=False
    )
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = NotificationHook
        fields = ["id", "url", "events", "secret", "has_secret", "format", "enabled", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_has_secret(self, hook: NotificationHook) -> bool:
        return bool(hook.secret)

    def validate_url(self, value: str) -> str:
        try:
            check_hook_url(value)
        except RefusedURL as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        return sorted(set(value))


class NotificationDeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = NotificationDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "status_code",
            "attempts",
            "created_at",
            "last_attempt_at",
            "delivered_at",
            # When a pending delivery is next attempted (its backoff, or a
            # lost task's re-enqueue); null once delivered or given up.
            "next_attempt_at",
            "error",
            "response_excerpt",
        ]
        read_only_fields = fields
