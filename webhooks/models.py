"""Registry webhook deliveries: the idempotency key and the audit trail.

Only authenticated, well-formed deliveries are stored; rejected ones leave a
log line and nothing else.
"""

import uuid as uuid_lib

from django.db import models
from django.utils import timezone


class Outcome(models.TextChoices):
    # Set on insert and replaced in the same transaction, so no committed row
    # keeps it; a duplicate never reads it (it waits for the commit).
    RECEIVED = "received"
    ROLLOUT_CREATED = "rollout_created"
    NO_MATCHING_POLICY = "no_matching_policy"
    NO_AFFECTED_DEVICES = "no_affected_devices"
    IGNORED = "ignored"


class WebhookDelivery(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid_lib.uuid4, editable=False)
    registry = models.CharField(max_length=32)
    # "<registry>:<delivery id>" when the registry numbers its deliveries
    # (GitHub), else "sha256:<body hash>": a retry resends the same body.
    delivery_key = models.CharField(max_length=160)
    body_sha256 = models.CharField(max_length=64)
    # A few request headers (user agent, event name, delivery id); never
    # credentials.
    headers = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    # One entry per push: image, tag, digest, status, rollout_id.
    pushes = models.JSONField(default=list, blank=True)
    outcome = models.CharField(max_length=32, choices=Outcome.choices)
    # The 202 body, replayed (as "duplicate") to every repeat of the delivery.
    response = models.JSONField(default=dict, blank=True)
    # The headline push's rollout, as in the answer (see services._headline);
    # every push's rollout id is
    # in `pushes`. Kept when the rollout is deleted: the audit trail stays.
    # The foreign key's index serves that SET NULL and "deliveries of a rollout".
    rollout = models.ForeignKey(
        "rollouts.Rollout",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="webhook_deliveries",
    )
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # Decides which of two concurrent copies of a delivery acts; the
            # duplicate path then reads the first answer through it.
            models.UniqueConstraint(fields=["delivery_key"], name="webhook_delivery_key_unique"),
        ]
        indexes = [
            # Admin change list (newest first) and pruning by age.
            models.Index(fields=["-received_at"], name="webhook_delivery_received_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.registry} {self.delivery_key} ({self.outcome})"
