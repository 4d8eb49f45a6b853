"""Image policies, rollouts, per-device rollout status and rollout events."""

import uuid as uuid_lib

from django.db import models
from django.db.models import Q
from django.utils import timezone

from devices.models import DEFAULT_STOP_TIMEOUT_SECONDS, Device, DeviceUpdateStrategy, Fleet

DEFAULT_BATCH_PERCENTAGES = [10, 50, 100]
# The ramp inside a batch (CONTRACT section 8): with no healthy device yet at
# most DEFAULT_RAMP_INITIAL devices of a rollout have the release, and each
# healthy one lets DEFAULT_RAMP_FACTOR more have it. Chosen with the
# simulator (README, Decisions): a release that fails everywhere reaches 10
# of 10,000 devices, a good one takes about 1.1x the time of no ramp.
DEFAULT_RAMP_INITIAL = 10
DEFAULT_RAMP_FACTOR = 2.0
MAX_RETRIES = 10


def default_batch_percentages() -> list[int]:
    return list(DEFAULT_BATCH_PERCENTAGES)


class UpdateStrategy(models.TextChoices):
    AUTO = "auto"
    STAGED = "staged"
    MANUAL = "manual"
    SCHEDULED = "scheduled"


class AllowedUpdates(models.TextChoices):
    ALL = "all"
    MAJOR = "major"
    MINOR = "minor"
    PATCH = "patch"


class ApprovalLevel(models.TextChoices):
    """`auto_approve_max_risk`: the riskiest rollout that starts unapproved."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class RiskLevel(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class RolloutSettings(models.Model):
    """How a rollout runs and which devices it may touch: set on a policy,
    copied onto each rollout it creates."""

    batch_percentages = models.JSONField(default=default_batch_percentages)
    batch_delay_minutes = models.FloatField(default=30)
    health_check_enabled = models.BooleanField(default=True)
    health_check_timeout_seconds = models.PositiveIntegerField(default=300)
    auto_rollback_enabled = models.BooleanField(default=True)
    max_failure_rate = models.FloatField(default=0.2)
    min_failure_samples = models.PositiveIntegerField(default=5)
    maintenance_window = models.JSONField(null=True, blank=True)
    device_tags = models.JSONField(default=list, blank=True)
    device_uuids = models.JSONField(default=list, blank=True)
    # Without a digest from the push, the tag must resolve against the
    # registry before any device is scheduled; when it does not, the rollout
    # waits (true) or goes on by tag (false).
    require_digest = models.BooleanField(default=False)
    # How devices swap containers; sent to them with each target this
    # rollout sets (devices.DeviceService).
    device_update_strategy = models.CharField(
        max_length=24,
        choices=DeviceUpdateStrategy.choices,
        default=DeviceUpdateStrategy.DOWNLOAD_THEN_KILL,
        # In the database too, for rows written by raw SQL.
        db_default=DeviceUpdateStrategy.DOWNLOAD_THEN_KILL,
    )
    stop_timeout_seconds = models.PositiveIntegerField(
        default=DEFAULT_STOP_TIMEOUT_SECONDS, db_default=DEFAULT_STOP_TIMEOUT_SECONDS
    )
    # Version rules (CONTRACT section 7; see rollouts/versions.py).
    version_constraint = models.CharField(max_length=200, null=True, blank=True)
    allowed_updates = models.CharField(
        max_length=8, choices=AllowedUpdates.choices, default=AllowedUpdates.ALL
    )
    include_prereleases = models.BooleanField(default=False)
    allow_downgrade = models.BooleanField(default=False)
    auto_approve_max_risk = models.CharField(
        max_length=8, choices=ApprovalLevel.choices, default=ApprovalLevel.HIGH
    )
    # Stepping stones: tags a device below them goes through first.
    required_versions = models.JSONField(default=list, blank=True)
    # Release safety: null releases each batch whole.
    ramp_initial = models.PositiveIntegerField(
        null=True, blank=True, default=DEFAULT_RAMP_INITIAL
    )
    ramp_factor = models.FloatField(default=DEFAULT_RAMP_FACTOR)
    # A failed device is sent the release again this many times before its
    # failure counts.
    max_retries = models.PositiveSmallIntegerField(default=0)

    class Meta:
        abstract = True


class ImagePolicy(RolloutSettings):
    """Whether and how a push of a matching image reaches the devices."""

    # Normalized glob over "registry/namespace/name:tag" (see normalize_image_pattern).
    image_pattern = models.CharField(max_length=300)
    update_strategy = models.CharField(
        max_length=16, choices=UpdateStrategy.choices, default=UpdateStrategy.STAGED
    )
    fleet = models.ForeignKey(
        Fleet, null=True, blank=True, on_delete=models.CASCADE, related_name="image_policies"
    )
    enabled = models.BooleanField(default=True)
    # Registry polling (rollouts/services/polling.py): the policy watches its
    # repository's tag list instead of waiting for a webhook.
    poll_registry = models.BooleanField(default=False)
    poll_interval_minutes = models.FloatField(default=15)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_poll_error = models.CharField(max_length=500, blank=True, default="")
    # When the policy is due next (interval, or the backoff after errors).
    next_poll_at = models.DateTimeField(null=True, blank=True)
    # A worker's claim on the policy while it polls (compare-and-set).
    poll_lease_until = models.DateTimeField(null=True, blank=True)
    poll_failures = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "image policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(max_failure_rate__gte=0, max_failure_rate__lte=1),
                name="policy_failure_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(batch_delay_minutes__gte=0), name="policy_batch_delay_positive"
            ),
            models.CheckConstraint(
                condition=Q(health_check_timeout_seconds__gt=0), name="policy_timeout_positive"
            ),
            models.CheckConstraint(
                condition=Q(min_failure_samples__gte=1), name="policy_min_samples_positive"
            ),
            models.CheckConstraint(
                condition=Q(poll_interval_minutes__gt=0), name="policy_poll_interval_positive"
            ),
            models.CheckConstraint(
                condition=Q(ramp_initial__isnull=True) | Q(ramp_initial__gte=1),
                name="policy_ramp_initial_positive",
            ),
            models.CheckConstraint(condition=Q(ramp_factor__gt=1), name="policy_ramp_factor_above_one"),
            models.CheckConstraint(
                condition=Q(max_retries__lte=MAX_RETRIES), name="policy_max_retries_range"
            ),
        ]
        indexes = [
            # The polling beat task: "polling policies that are due".
            models.Index(
                fields=["next_poll_at"], name="policy_poll_due_idx", condition=Q(poll_registry=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.image_pattern} ({self.update_strategy})"


class RolloutStatus(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"


SETTINGS_FIELDS = [field.name for field in RolloutSettings._meta.local_fields]

ACTIVE_STATUSES = (
    RolloutStatus.AWAITING_APPROVAL,
    RolloutStatus.PENDING,
    RolloutStatus.IN_PROGRESS,
    RolloutStatus.PAUSED,
)


class Trigger(models.TextChoices):
    WEBHOOK = "webhook"
    MANUAL = "manual"
    POLL = "poll"


class DigestSource(models.TextChoices):
    PUSH = "push"
    REGISTRY = "registry"
    MANUAL = "manual"


class Rollout(RolloutSettings):
    """One push of one image moving through the devices that run the image.

    The policy's settings are copied at creation: editing a policy changes the
    next rollout, never one that is half-way through its batches.
    """

    id = models.UUIDField(primary_key=True, default=uuid_lib.uuid4, editable=False)
    image = models.CharField(max_length=255)
    new_tag = models.CharField(max_length=128)
    new_digest = models.CharField(max_length=100, null=True, blank=True)
    # Where new_digest came from; null while unknown (not resolved yet, or the
    # rollout goes on by tag).
    digest_source = models.CharField(
        max_length=16, choices=DigestSource.choices, null=True, blank=True
    )
    policy = models.ForeignKey(
        ImagePolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="rollouts"
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    # The highest risk of its devices' updates (null until the fan-out).
    risk = models.CharField(max_length=8, choices=RiskLevel.choices, null=True, blank=True)
    approved_by = models.CharField(max_length=150, blank=True, default="")
    approved_at = models.DateTimeField(null=True, blank=True)
    # Digests of the stepping stones (required_versions), by tag, resolved
    # with the rollout's own digest: every device goes through the same image.
    via_digests = models.JSONField(default=dict, blank=True)

    strategy = models.CharField(max_length=16, choices=UpdateStrategy.choices)
    # Copied from the policy like the RolloutSettings fields.
    fleet = models.ForeignKey(Fleet, null=True, blank=True, on_delete=models.SET_NULL)

    status = models.CharField(
        max_length=20, choices=RolloutStatus.choices, default=RolloutStatus.PENDING
    )
    status_reason = models.CharField(max_length=500, blank=True)
    current_batch = models.PositiveIntegerField(default=0)
    total_batches = models.PositiveIntegerField(default=0)
    # Rows the fan-out inserted. The API shows the live count of the rollout's
    # rows instead (`with_counts`): deleting a device deletes its rows.
    total_devices = models.PositiveIntegerField(default=0)
    # Set when the current batch had a verdict for every device.
    batch_finished_at = models.DateTimeField(null=True, blank=True)
    next_batch_at = models.DateTimeField(null=True, blank=True)
    # Failure-rate judgement counts verdicts from here on (start, and each
    # resume: resuming acknowledges the failures that caused the pause).
    judged_since = models.DateTimeField(null=True, blank=True)
    # Every set-based device transition gets the next step number, so that
    # its events are inserted from exactly the rows it changed.
    step = models.PositiveIntegerField(default=0)
    fanned_out_at = models.DateTimeField(null=True, blank=True)
    # Active rollouts of the image that were locked when this one was created:
    # the fan-out supersedes them (see _supersede_active_rollouts).
    supersede_later = models.JSONField(default=list, blank=True)
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Not auto_now_add: the engine passes its `now`, so a virtual clock holds.
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The engine tick: "active rollouts" (few rows among many finished).
            models.Index(
                fields=["status"],
                name="rollout_active_idx",
                condition=Q(status__in=["awaiting_approval", "pending", "in_progress", "paused"]),
            ),
            # Superseding: "active rollout of this image"; API filter ?image=.
            models.Index(fields=["image", "status"], name="rollout_image_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.image}:{self.new_tag} ({self.status})"


class DeviceStatus(models.TextChoices):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    UPDATED = "updated"
    HEALTHY = "healthy"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    SKIPPED = "skipped"
    # Released, but the device has not polled since: it looks offline. Not a
    # failure; scheduled again when it polls.
    DEFERRED = "deferred"


IN_FLIGHT = (DeviceStatus.SCHEDULED, DeviceStatus.UPDATED)
# Rows the tick still looks at, also after the rollout completed.
WATCHED = (*IN_FLIGHT, DeviceStatus.DEFERRED)


class SkipReason(models.TextChoices):
    """Why a row of a rollout is `skipped` (null while it is not)."""

    ALREADY_CURRENT = "already_current"
    PINNED = "pinned"
    DOWNGRADE = "downgrade"
    UPDATE_KIND = "update_kind"
    VARIANT = "variant"
    PRERELEASE = "prerelease"
    VERSION_CONSTRAINT = "version_constraint"


class FailureReason(models.TextChoices):
    UNHEALTHY = "unhealthy"
    CRASHED = "crashed"
    TIMEOUT = "timeout"


class RolloutDevice(models.Model):
    """One service of one device in one rollout."""

    # Indexed by rollout_device_unique and the other indexes that start with
    # it: one index fewer to write for each of a rollout's rows.
    rollout = models.ForeignKey(
        Rollout, on_delete=models.CASCADE, related_name="devices", db_index=False
    )
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="rollout_entries")
    service = models.CharField(max_length=100)
    # Null for skipped rows: they belong to no batch.
    batch = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=DeviceStatus.choices, default=DeviceStatus.PENDING
    )
    failure_reason = models.CharField(
        max_length=16, choices=FailureReason.choices, blank=True, default=""
    )
    skip_reason = models.CharField(
        max_length=24, choices=SkipReason.choices, null=True, blank=True
    )
    old_tag = models.CharField(max_length=128, null=True, blank=True)
    old_digest = models.CharField(max_length=100, null=True, blank=True)
    new_tag = models.CharField(max_length=128)
    new_digest = models.CharField(max_length=100, null=True, blank=True)
    # When the device was last sent the release (first time, or a retry):
    # only reports made after it judge the row.
    scheduled_at = models.DateTimeField(null=True, blank=True)
    # Start of the health-check timeout: scheduled_at, or when a deferred
    # device polled again.
    timer_started_at = models.DateTimeField(null=True, blank=True)
    verdict_at = models.DateTimeField(null=True, blank=True)
    step = models.PositiveIntegerField(default=0)
    # Upgrade path: stepping stones the device goes through, in order, and
    # how many it has passed (healthy there). While hop < len(via) the
    # device is sent via[hop], afterwards new_tag.
    via = models.JSONField(default=list, blank=True)
    hop = models.PositiveSmallIntegerField(default=0)
    # How many times the device was sent the new version (0: not yet).
    # db_default: the fan-out inserts rows in raw SQL that need not name it.
    attempts = models.PositiveIntegerField(default=0, db_default=0)
    # After a retry, the device's target_version that sent the release
    # again: only a report made towards it (or later) judges the retry, so a
    # late report of the failed attempt cannot.
    retry_target_version = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "device", "service"], name="rollout_device_unique"
            ),
        ]
        indexes = [
            # The tick: rows of one rollout by batch and status (judge, schedule).
            models.Index(fields=["rollout", "batch", "status"], name="rollout_device_batch_idx"),
            # Events of one transition: "rows of this rollout changed at step N".
            models.Index(fields=["rollout", "step"], name="rollout_device_step_idx"),
            # The tick: rows in flight or deferred, in any batch, and which
            # completed rollouts still have some to watch.
            models.Index(
                fields=["rollout"],
                name="rollout_device_watch_idx",
                condition=Q(status__in=["scheduled", "updated", "deferred"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.device_id}/{self.service} in {self.rollout_id}"


class EventType(models.TextChoices):
    WEBHOOK_RECEIVED = "image.webhook_received"
    ROLLOUT_CREATED = "image.rollout_created"
    ROLLOUT_STARTED = "image.rollout_started"
    BATCH_STARTED = "image.batch_started"
    BATCH_COMPLETED = "image.batch_completed"
    DEVICE_SCHEDULED = "image.device_scheduled"
    DEVICE_UPDATED = "image.device_updated"
    DEVICE_FAILED = "image.device_failed"
    HEALTH_CHECK_PASSED = "image.health_check_passed"
    HEALTH_CHECK_FAILED = "image.health_check_failed"
    DEVICE_ROLLED_BACK = "image.device_rolled_back"
    ROLLOUT_PAUSED = "image.rollout_paused"
    ROLLOUT_RESUMED = "image.rollout_resumed"
    ROLLOUT_COMPLETED = "image.rollout_completed"
    ROLLOUT_FAILED = "image.rollout_failed"
    ROLLOUT_CANCELLED = "image.rollout_cancelled"
    ROLLOUT_SUPERSEDED = "image.rollout_superseded"
    ROLLOUT_ROLLED_BACK = "image.rollout_rolled_back"
    DIGEST_RESOLVED = "image.digest_resolved"
    DIGEST_UNRESOLVED = "image.digest_unresolved"
    DEVICE_SKIPPED = "image.device_skipped"
    ROLLOUT_AWAITING_APPROVAL = "image.rollout_awaiting_approval"
    ROLLOUT_APPROVED = "image.rollout_approved"
    ROLLOUT_REJECTED = "image.rollout_rejected"
    DEVICE_DEFERRED = "image.device_deferred"
    DEVICE_RETRIED = "image.device_retried"
    ROLLOUT_RETRIED = "image.rollout_retried"


class RolloutEvent(models.Model):
    # Indexed by rollout_event_list_idx, which starts with it.
    rollout = models.ForeignKey(
        Rollout, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    event_type = models.CharField(max_length=40, choices=EventType.choices)
    device_uuid = models.UUIDField(null=True, blank=True)
    message = models.CharField(max_length=500)
    data = models.JSONField(default=dict, blank=True)
    timestamp = models.DateTimeField()

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [
            # GET /rollouts/{id}/events/, newest first.
            models.Index(fields=["rollout", "-timestamp", "-id"], name="rollout_event_list_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.timestamp:%Y-%m-%d %H:%M:%S}"


class ImagePush(models.Model):
    """The newest push of each image seen (webhook, registry poll or manual
    trigger), whatever came of it (a rollout, no matching policy, ignored,
    no affected devices): the inventory's `newest_push`. One row per image,
    kept by an upsert (`rollouts.services.pushes.push_record`)."""

    image = models.CharField(max_length=255, unique=True)
    tag = models.CharField(max_length=128)
    digest = models.CharField(max_length=100, null=True, blank=True)
    # webhook, poll or manual (Trigger); no choices, so that a new trigger
    # needs no migration here.
    trigger = models.CharField(max_length=16)
    received_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.image}:{self.tag}"
