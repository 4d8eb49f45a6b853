"""Reads behind the console pages. Each page costs a fixed number of queries,
whatever the number of devices: counts are aggregated in SQL, tables are paged."""

from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from rollouts import access
from rollouts.models import (
    IN_FLIGHT,
    DeviceStatus,
    FailureReason,
    Rollout,
    RolloutDevice,
    RolloutEvent,
    SkipReason,
)
from rollouts.selectors import failure_rate, with_counts

DEVICE_PAGE_SIZE = 50
TIMELINE_LENGTH = 50

# Order and colour class of the segments of a progress bar.
SEGMENTS = [
    ("healthy", "healthy"),
    ("in_flight", "in flight"),
    ("failed", "failed"),
    ("rolled_back", "rolled back"),
    ("skipped", "skipped"),
    # Released, but the device has not polled since (offline): no verdict yet.
    ("deferred", "deferred"),
    ("pending", "pending"),
]


def last_event_at() -> Subquery:
    """Time of a rollout's newest event (served by rollout_event_list_idx)."""
    newest = RolloutEvent.objects.filter(rollout=OuterRef("pk")).order_by("-timestamp", "-id")
    return Subquery(newest.values("timestamp")[:1])


def rollouts_for_console(queryset: QuerySet) -> QuerySet:
    """Rollouts with their device counts and the time of their newest event."""
    return with_counts(queryset.select_related("policy", "fleet")).annotate(
        last_event_at=last_event_at()
    )


@dataclass
class Progress:
    """Device counts of a rollout or of one batch, as bar segments."""

    total: int
    counts: dict[str, int]
    label: str = ""
    state: str = ""
    segments: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.segments = [
            {
                "key": key,
                "label": label,
                "count": self.counts.get(key, 0),
                "percent": round(100 * self.counts.get(key, 0) / self.total, 2) if self.total else 0,
            }
            for key, label in SEGMENTS
            if self.counts.get(key, 0)
        ]

    @property
    def done(self) -> int:
        return sum(self.counts.get(key, 0) for key in ("healthy", "failed", "rolled_back", "skipped"))

    @property
    def done_percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def rollout_progress(rollout: Rollout) -> Progress:
    """The whole rollout's bar, from the counts `with_counts` annotated."""
    counts = {
        "healthy": rollout.count_healthy,
        "in_flight": rollout.count_scheduled + rollout.count_updated,
        "failed": rollout.count_failed,
        "rolled_back": rollout.count_rolled_back,
        "skipped": rollout.count_skipped,
        "deferred": rollout.count_deferred,
        "pending": rollout.count_pending,
    }
    return Progress(total=sum(counts.values()), counts=counts)


def batch_progress(rollout: Rollout) -> list[Progress]:
    """One bar per batch, from one grouped query."""
    rows = (
        RolloutDevice.objects.filter(rollout=rollout, batch__isnull=False)
        .values("batch")
        .annotate(
            total=Count("id"),
            healthy=Count("id", filter=Q(status=DeviceStatus.HEALTHY)),
            in_flight=Count("id", filter=Q(status__in=IN_FLIGHT)),
            failed=Count("id", filter=Q(status=DeviceStatus.FAILED)),
            rolled_back=Count("id", filter=Q(status=DeviceStatus.ROLLED_BACK)),
            skipped=Count("id", filter=Q(status=DeviceStatus.SKIPPED)),
            deferred=Count("id", filter=Q(status=DeviceStatus.DEFERRED)),
            pending=Count("id", filter=Q(status=DeviceStatus.PENDING)),
        )
        .order_by("batch")
    )
    by_batch = {row["batch"]: row for row in rows}
    percentages = rollout.batch_percentages or []
    bars = []
    for number in range(1, max(rollout.total_batches, max(by_batch, default=0)) + 1):
        row = by_batch.get(number, {"total": 0})
        counts = {key: row.get(key, 0) for key, _ in SEGMENTS}
        share = percentages[number - 1] if number <= len(percentages) else None
        bars.append(
            Progress(
                total=row["total"],
                counts=counts,
                label=f"Batch {number}" + (f" · up to {share} %" if share else ""),
                state=_batch_state(rollout, number),
            )
        )
    return bars


def _batch_state(rollout: Rollout, number: int) -> str:
    if number < rollout.current_batch:
        return "done"
    if number == rollout.current_batch:
        return "done" if rollout.batch_finished_at else "current"
    return "waiting"


@dataclass(frozen=True)
class DeviceFilters:
    """The device table's filters, read leniently from the query string: a value
    that is not a choice is ignored rather than answered with an error page."""

    status: str = ""
    batch: int | None = None
    reason: str = ""
    skip: str = ""

    @classmethod
    def from_query(cls, query, total_batches: int) -> "DeviceFilters":
        status = query.get("status", "")
        reason = query.get("reason", "")
        batch = query.get("batch", "")
        skip = query.get("skip", "")
        return cls(
            status=status if status in DeviceStatus.values else "",
            reason=reason if reason in FailureReason.values else "",
            skip=skip if skip in SkipReason.values else "",
            batch=int(batch) if batch.isdigit() and 1 <= int(batch) <= max(total_batches, 1) else None,
        )

    def apply(self, rows: QuerySet) -> QuerySet:
        if self.status:
            rows = rows.filter(status=self.status)
        if self.batch:
            rows = rows.filter(batch=self.batch)
        if self.reason:
            rows = rows.filter(failure_reason=self.reason)
        if self.skip:
            rows = rows.filter(skip_reason=self.skip)
        return rows

    @property
    def active(self) -> bool:
        return bool(self.status or self.batch or self.reason or self.skip)


def device_page(rollout: Rollout, filters: DeviceFilters, page_number, user) -> Page:
    """A page of the rollout's device rows; a fleet member sees the rows of
    the devices in their fleets only."""
    rows = access.visible_rollout_devices(RolloutDevice.objects.filter(rollout=rollout), user)
    rows = filters.apply(rows).select_related("device")
    # Rows are ordered by the index the tick uses: (batch, id); skipped rows last.
    rows = rows.order_by("batch", "id")
    return Paginator(rows, DEVICE_PAGE_SIZE).get_page(page_number)


def timeline(rollout: Rollout, user) -> list[RolloutEvent]:
    events = access.visible_events(rollout.events.all(), user)
    return list(events.order_by("-timestamp", "-id")[:TIMELINE_LENGTH])


def rollout_failure_rate(rollout: Rollout) -> float:
    return failure_rate(rollout.count_healthy, rollout.count_failures)
