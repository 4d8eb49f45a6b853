"""Fleets, devices and per-service target / reported state.

A device's target state is the set of its `DeviceService` rows plus the
device's `target_version`, which only grows: every change of any target bumps
it, and the poll's ETag is derived from it (and the poll interval setting).
"""

import uuid as uuid_lib

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Fleet(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    # SHA-256 of the provisioning key; the key itself is shown once.
    provisioning_key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug


class Device(models.Model):
    uuid = models.UUIDField(default=uuid_lib.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, blank=True)
    # Indexed by device_fleet_idx, which starts with it (see tests/test_indexes.py).
    fleet = models.ForeignKey(
        Fleet, on_delete=models.PROTECT, related_name="devices", db_index=False
    )
    # SHA-256 of the device api key. Unique: the poll looks the device up by it.
    api_key_hash = models.CharField(max_length=64, unique=True, editable=False)
    target_version = models.BigIntegerField(default=1)
    # The target_version the agent last said it works towards.
    reported_target_version = models.BigIntegerField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_report_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(target_version__gte=1), name="device_target_version_positive"
            ),
        ]
        indexes = [
            # Device list filtered by fleet (API `?fleet=`, policy fleet filter).
            models.Index(fields=["fleet", "id"], name="device_fleet_idx"),
            # No index on last_seen_at on purpose: polls rewrite it once per
            # interval per device, and an index on it would make every such
            # write a non-HOT update touching all indexes. The `online` filter
            # scans instead, which is cheap for an operator's occasional query.
        ]

    def __str__(self) -> str:
        return self.name or str(self.uuid)


class DeviceTag(models.Model):
    """One tag of a device. A table rather than a JSON list so that tag filters
    are portable, indexed joins on both SQLite and PostgreSQL."""

    # Indexed by device_tag_unique, which starts with it.
    device = models.ForeignKey(
        Device, on_delete=models.CASCADE, related_name="tag_set", db_index=False
    )
    name = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "name"], name="device_tag_unique"),
        ]
        indexes = [
            # Filter devices by tag (API `?tag=`, policy `device_tags`).
            models.Index(fields=["name", "device"], name="device_tag_name_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class ServiceStatus(models.TextChoices):
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    RUNNING = "running"
    EXITED = "exited"
    FAILED = "failed"


class ServiceHealth(models.TextChoices):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    NONE = "none"


class DeviceUpdateStrategy(models.TextChoices):
    """How a device swaps a service's container for a new image (CONTRACT section 8)."""

    # Pull first, then replace the container: the shortest downtime, but the
    # device holds both images for a while.
    DOWNLOAD_THEN_KILL = "download-then-kill"
    # Stop the old container, then pull: for devices short of memory.
    KILL_THEN_DOWNLOAD = "kill-then-download"
    # Stop and remove the old container and its image, then pull: for
    # devices short of disk.
    DELETE_THEN_DOWNLOAD = "delete-then-download"


DEFAULT_STOP_TIMEOUT_SECONDS = 10


class DeviceService(models.Model):
    """Target, previous target and last report of one service on one device.

    A row may have a report but no target (a service the agent runs that we
    were never told about), or a target but no report yet.
    """

    # Indexed by device_service_unique, which starts with it: one index
    # fewer to write on every report and every batch.
    device = models.ForeignKey(
        Device, on_delete=models.CASCADE, related_name="services", db_index=False
    )
    name = models.CharField(max_length=100)

    target_image = models.CharField(max_length=255, null=True, blank=True)
    target_tag = models.CharField(max_length=128, null=True, blank=True)
    target_digest = models.CharField(max_length=100, null=True, blank=True)
    # The rollout that set this target. A plain UUID, not a foreign key:
    # devices never depend on rollouts.
    target_rollout_id = models.UUIDField(null=True, blank=True)
    target_changed_at = models.DateTimeField(null=True, blank=True)
    # An operator's pin (a hotfix tag, say): no rollout changes this target.
    pinned = models.BooleanField(default=False)
    # How the device swaps containers, sent with the target: set by the
    # rollout that last moved the service (its policy's settings); a manual
    # target change keeps them.
    update_strategy = models.CharField(
        max_length=24,
        choices=DeviceUpdateStrategy.choices,
        default=DeviceUpdateStrategy.DOWNLOAD_THEN_KILL,
        # Also in the database: rows written by raw SQL (the benchmarks'
        # fleets, bulk imports) get the same values as the ORM's.
        db_default=DeviceUpdateStrategy.DOWNLOAD_THEN_KILL,
    )
    stop_timeout_seconds = models.PositiveIntegerField(
        default=DEFAULT_STOP_TIMEOUT_SECONDS, db_default=DEFAULT_STOP_TIMEOUT_SECONDS
    )

    # The target before the last change, so a rollback never needs the registry.
    previous_image = models.CharField(max_length=255, null=True, blank=True)
    previous_tag = models.CharField(max_length=128, null=True, blank=True)
    previous_digest = models.CharField(max_length=100, null=True, blank=True)

    reported_image = models.CharField(max_length=255, null=True, blank=True)
    reported_tag = models.CharField(max_length=128, null=True, blank=True)
    reported_digest = models.CharField(max_length=100, null=True, blank=True)
    reported_status = models.CharField(
        max_length=16, choices=ServiceStatus.choices, null=True, blank=True
    )
    reported_health = models.CharField(
        max_length=16, choices=ServiceHealth.choices, null=True, blank=True
    )
    reported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["device_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["device", "name"], name="device_service_unique"),
        ]
        indexes = [
            # Rollout creation: "services whose target is image X on another
            # tag". Ordered by tag, so the webhook's "is any device affected"
            # probe stops at the first row instead of scanning the image's rows.
            models.Index(fields=["target_image", "target_tag"], name="service_target_image_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id}/{self.name}"

    @property
    def target_reference(self) -> str | None:
        return _reference(self.target_image, self.target_tag, self.target_digest)

    @property
    def reported_reference(self) -> str | None:
        return _reference(self.reported_image, self.reported_tag, self.reported_digest)


class HistorySource(models.TextChoices):
    REGISTRATION = "registration"
    MANUAL = "manual"
    ROLLOUT = "rollout"
    ROLLBACK = "rollback"
    PIN = "pin"


class HistoryOutcome(models.TextChoices):
    HEALTHY = "healthy"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class ServiceHistory(models.Model):
    """One target a device's service had: who set it, when, and how it went.

    Every target change adds a row and closes the one before (`replaced_at`);
    only the newest DEVICE_HISTORY_KEEP rows per device and service are kept.
    """

    # Indexed by history_service_idx, which starts with it.
    device = models.ForeignKey(
        Device, on_delete=models.CASCADE, related_name="history", db_index=False
    )
    service = models.CharField(max_length=100)
    image = models.CharField(max_length=255)
    tag = models.CharField(max_length=128, null=True, blank=True)
    digest = models.CharField(max_length=100, null=True, blank=True)
    source = models.CharField(max_length=16, choices=HistorySource.choices)
    # Plain UUID like DeviceService.target_rollout_id: devices never depend on rollouts.
    rollout_id = models.UUIDField(null=True, blank=True)
    deployed_at = models.DateTimeField()
    replaced_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=16, choices=HistoryOutcome.choices, null=True, blank=True
    )

    class Meta:
        ordering = ["-deployed_at", "-id"]
        verbose_name_plural = "service history"
        indexes = [
            # GET /devices/{uuid}/history/, the rollback's "previous version"
            # and the retention trim: one device's service, newest first.
            models.Index(
                fields=["device", "service", "-deployed_at", "-id"], name="history_service_idx"
            ),
            # The engine writes outcomes by rollout: "this rollout's rows of
            # these devices".
            models.Index(
                fields=["rollout_id", "device"],
                name="history_rollout_idx",
                condition=Q(rollout_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.device_id}/{self.service} {self.tag} ({self.source})"


def _reference(image: str | None, tag: str | None, digest: str | None) -> str | None:
    if not image:
        return None
    text = image + (f":{tag}" if tag else "")
    return text + (f"@{digest}" if digest else "")


class Role(models.TextChoices):
    """A member's role in one fleet; each role may do all the one before may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class FleetMembership(models.Model):
    """A user's role in one fleet (CONTRACT section 10). Users with model
    permissions need none: those keep granting access across every fleet."""

    # Both indexed by indexes that start with them (fleet_membership_unique,
    # fleet_membership_fleet_idx).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="fleet_memberships",
        db_index=False,
    )
    fleet = models.ForeignKey(
        Fleet, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["fleet_id", "user_id"]
        constraints = [
            # Also the index of every scoped query: "fleets where this user has
            # one of these roles" reads it by its leading user column.
            models.UniqueConstraint(fields=["user", "fleet"], name="fleet_membership_unique"),
        ]
        indexes = [
            # The members list of one fleet.
            models.Index(fields=["fleet", "user"], name="fleet_membership_fleet_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.role} of {self.fleet_id}"


class FleetAuditAction(models.TextChoices):
    MEMBER_ADDED = "member.added"
    MEMBER_CHANGED = "member.role_changed"
    MEMBER_REMOVED = "member.removed"
    KEY_ROTATED = "fleet.key_rotated"


class FleetAuditEvent(models.Model):
    """Who changed a fleet's access, and when: membership changes and key
    rotations. The fleet's slug and the actor's username are copied so the
    trail survives the fleet or the user being deleted."""

    # Indexed by fleet_audit_fleet_idx, which starts with it.
    fleet = models.ForeignKey(
        Fleet,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_events",
        db_index=False,
    )
    fleet_slug = models.CharField(max_length=64)
    action = models.CharField(max_length=32, choices=FleetAuditAction.choices)
    actor = models.CharField(max_length=150)
    subject = models.CharField(max_length=150, blank=True, default="")
    data = models.JSONField(default=dict, blank=True)
    timestamp = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [
            # The audit trail of one fleet, newest first.
            models.Index(fields=["fleet", "-timestamp"], name="fleet_audit_fleet_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.subject}"
