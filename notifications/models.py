"""Notification hooks: where to POST rollout events, and the log of each
delivery."""

import uuid

from django.db import models
from django.db.models import Q

from rollouts.models import RolloutEvent


class HookFormat(models.TextChoices):
    JSON = "json"
    SLACK = "slack"


class NotificationHook(models.Model):
    url = models.URLField(max_length=2000)
    # Event types to send; empty: every rollout-level event (no device).
    events = models.JSONField(default=list, blank=True)
    # Kept in clear: it signs every delivery (HMAC), so it cannot be hashed.
    # The API never returns it.
    secret = models.CharField(max_length=200, blank=True)
    format = models.CharField(max_length=10, choices=HookFormat.choices, default=HookFormat.JSON)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class NotificationDelivery(models.Model):
    # Sent as X-Fleet-Delivery: receivers deduplicate retries with it.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by one_delivery_per_hook_event and hook_delivery_list_idx.
    hook = models.ForeignKey(
        NotificationHook, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    event = models.ForeignKey(RolloutEvent, on_delete=models.CASCADE, related_name="+")
    event_type = models.CharField(max_length=40)
    # The exact bytes sent (and signed) on every attempt.
    body = models.TextField()
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    # Never more than this of what the receiver answered.
    response_excerpt = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # When a pending delivery is next to be attempted: its creation, the
    # backoff after a failed attempt, or the end of an attempt in flight.
    # The dispatch pass re-enqueues pending deliveries well past it (their
    # task was lost: a broker outage, a killed worker).
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The dispatcher may look at an event twice; it is delivered once.
            models.UniqueConstraint(fields=["hook", "event"], name="one_delivery_per_hook_event"),
        ]
        indexes = [
            # GET /notification-hooks/{id}/deliveries/, newest first.
            models.Index(fields=["hook", "-created_at"], name="hook_delivery_list_idx"),
            # deliveries_due, every dispatch pass: the pending ones only.
            models.Index(
                fields=["next_attempt_at"], name="delivery_due_idx", condition=Q(status="pending")
            ),
        ]


class DispatchState(models.Model):
    """One row: how far the dispatcher has settled the event log (see
    rollouts.streams.cursor), locked by each dispatch pass."""

    position = models.BigIntegerField(default=0)
    gap = models.JSONField(default=dict, blank=True)
