"""Shapes of the webhook answers, for the OpenAPI schema (the view builds
the answers itself; see services.delivery_receive)."""

from rest_framework import serializers

STATUSES = ["rollout_created", "no_matching_policy", "no_affected_devices", "duplicate", "ignored"]


class WebhookPushResultSerializer(serializers.Serializer):
    image = serializers.CharField()
    tag = serializers.CharField()
    digest = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=STATUSES[:3])
    rollout_id = serializers.UUIDField(allow_null=True)


class WebhookAnswerSerializer(serializers.Serializer):
    delivery_id = serializers.UUIDField()
    registry = serializers.CharField()
    status = serializers.ChoiceField(choices=STATUSES)
    rollout_id = serializers.UUIDField(
        allow_null=True,
        help_text="The headline push's rollout: the first push whose rollout survived.",
    )
    image = serializers.CharField(allow_null=True, help_text="The headline push's normalized image.")
    tag = serializers.CharField(allow_null=True)
    digest = serializers.CharField(allow_null=True)
    pushes = WebhookPushResultSerializer(
        many=True, help_text="Every push of the delivery, in order."
    )
    reason = serializers.CharField(required=False, help_text="Why an ignored delivery was ignored.")
    first_status = serializers.CharField(
        required=False, help_text="For a duplicate: the status the first copy got."
    )


class WebhookErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField()
